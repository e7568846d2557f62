"""Ray Tune trainable for the regnet family: Gaussian latent head (or the cross-entropy baseline) + evaluation.

Every epoch: the core's metrics (``train_regnet`` / ``train_kurtosis`` terms, robust and plain FGSM accuracy when
``eval_eps`` is set) plus, under the Gaussian head, the gaussianity of the validation latents. At the last
epoch: torchattacks APGD with the CE and the scale-invariant DLR loss at the largest eval eps <= 0.3, and a
``gradient_masking`` flag when our PGD beats the stronger of them by more than 2 points (the CE of RegNet's
scores saturates at large mu_T, so a flat FGSM curve alone is not robustness).
"""

from __future__ import annotations

from trainables.adapter import run_trial
from trainables.core import Trainer
from trainables.core.adversarial import metric_name
from trainables.core.regnet import gaussianity_evaluator

INDEPENDENT_SAMPLES = 500


def loss_for(head: str) -> str:
    """In this family the per-sample loss follows the head: the RegNet terms are the Gaussian head's objective."""
    return "none" if head == "gaussian" else "cross_entropy"


# The evaluation FGSM of this family differentiates the loss each model trains on (the thesis's eq. 2.6 for the
# Gaussian head, the cross-entropy for the baseline), as the thesis drew its curves; ``fgsm_loss: ce | margin``
# in a study picks another.
FGSM_LOSS = "training"


def trial_config(config: dict) -> dict:
    """The training config of a trial: the study's plus the loss its head implies (head default: linear), and,
    when it evaluates robustness (``eval_eps``), this family's FGSM loss unless the study names one."""
    out = {**config, "loss": loss_for(config.get("head", "linear"))}
    if config.get("eval_eps"):
        out.setdefault("fgsm_loss", FGSM_LOSS)
    return out


def independent_metrics(trainer: Trainer, metrics: dict[str, float]) -> dict[str, float]:
    from trainables.independent_check import gradient_masking_flag, independent_check

    cfg = trainer.cfg
    if not cfg.eval_eps or max(cfg.eval_eps) <= 0:
        return {}
    eps = max(e for e in cfg.eval_eps if e <= 0.3) if min(cfg.eval_eps) <= 0.3 else min(cfg.eval_eps)
    n = min(cfg.eval_samples, INDEPENDENT_SAMPLES)
    val = trainer.data.val
    found = independent_check(trainer.eval_model(), val.x[:n], val.y[:n], eps, steps=cfg.eval_pgd_steps,
                              seed=cfg.seed, dlr=True)
    out = {"indep_eps": eps, "indep_pgd_acc": found["pgd_acc"], "indep_apgd_acc": found["apgd_acc"]}
    if "apgd_dlr_acc" in found:
        out["indep_apgd_dlr_acc"] = found["apgd_dlr_acc"]
    ours = metrics.get(metric_name("pgd", eps))
    if ours is not None:
        out["gradient_masking"] = float(gradient_masking_flag(ours, min(v for k, v in found.items() if k != "clean_acc")))
    return out


def train_regnet(config: dict) -> None:
    config = trial_config(config)
    evaluators = [gaussianity_evaluator] if config.get("head") == "gaussian" else []
    run_trial(config, final_metrics=independent_metrics, evaluators=evaluators)
