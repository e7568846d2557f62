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
from trainables.core.gaussian_head import gaussianity_evaluator
from trainables.families import trial_config
from trainables.independent_check import independent_metrics


def check_eps(cfg) -> float:
    """The eps of the independent check: the largest eval eps <= 0.3 (else the smallest); 0 without eval_eps."""
    if not cfg.eval_eps:
        return 0.0
    small = [e for e in cfg.eval_eps if e <= 0.3]
    return max(small) if small else min(cfg.eval_eps)


def final_metrics(trainer: Trainer, metrics: dict[str, float]) -> dict[str, float]:
    return independent_metrics(trainer, metrics, check_eps(trainer.cfg), dlr=True)


def train_regnet(config: dict) -> None:
    config = trial_config(config)
    evaluators = [gaussianity_evaluator] if config.get("head") == "gaussian" else []
    run_trial(config, final_metrics=final_metrics, evaluators=evaluators)
