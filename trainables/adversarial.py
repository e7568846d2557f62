"""Ray Tune trainable for the adversarial family: adversarial training + robust evaluation.

Every epoch reports clean, FGSM, PGD and random-noise accuracy for each eps in ``eval_eps``
(the core does that). At the last epoch it adds an independent check with torchattacks
(PGD and APGD) at the training eps, and flags possible gradient masking when our PGD
accuracy beats the independent attack by more than 2 points.
"""

from __future__ import annotations

from trainables.adapter import run_trial
from trainables.core import Trainer
from trainables.core.adversarial import metric_name

INDEPENDENT_SAMPLES = 500  # enough for a 2-point comparison on a CPU in seconds


def check_eps(cfg) -> float:
    """The eps of the independent check: the training eps if it is evaluated, else the largest one."""
    if cfg.adv_eps > 0 and cfg.adv_eps in cfg.eval_eps:
        return cfg.adv_eps
    return max(cfg.eval_eps) if cfg.eval_eps else cfg.adv_eps


def independent_metrics(trainer: Trainer, metrics: dict[str, float]) -> dict[str, float]:
    from trainables.independent_check import gradient_masking_flag, independent_check

    cfg = trainer.cfg
    eps = check_eps(cfg)
    if eps <= 0:
        return {}
    n = min(cfg.eval_samples, INDEPENDENT_SAMPLES)
    val = trainer.data.val
    found = independent_check(trainer.eval_model(), val.x[:n], val.y[:n], eps, steps=cfg.eval_pgd_steps,
                              seed=cfg.seed)
    ours = metrics.get(metric_name("pgd", eps))
    out = {"indep_eps": eps, "indep_pgd_acc": found["pgd_acc"], "indep_apgd_acc": found["apgd_acc"]}
    if ours is not None:
        strongest = min(found["pgd_acc"], found["apgd_acc"])
        out["gradient_masking"] = float(gradient_masking_flag(ours, strongest))
    return out


def train_adversarial(config: dict) -> None:
    run_trial(config, final_metrics=independent_metrics)
