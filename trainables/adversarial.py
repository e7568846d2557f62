"""Ray Tune trainable for the adversarial family: adversarial training + robust evaluation.

Every epoch reports clean, FGSM, PGD and random-noise accuracy for each eps in ``eval_eps``
(the core does that). At the last epoch it adds an independent check with torchattacks
(PGD and APGD) at the training eps, and flags possible gradient masking when our PGD
accuracy beats the independent attack by more than 2 points.
"""

from __future__ import annotations

from trainables.adapter import run_trial
from trainables.core import Trainer
from trainables.independent_check import independent_metrics


def check_eps(cfg) -> float:
    """The eps of the independent check: the training eps if it is evaluated, else the largest one."""
    if cfg.adv_eps > 0 and cfg.adv_eps in cfg.eval_eps:
        return cfg.adv_eps
    return max(cfg.eval_eps) if cfg.eval_eps else cfg.adv_eps


def final_metrics(trainer: Trainer, metrics: dict[str, float]) -> dict[str, float]:
    return independent_metrics(trainer, metrics, check_eps(trainer.cfg))


def train_adversarial(config: dict) -> None:
    run_trial(config, final_metrics=final_metrics)
