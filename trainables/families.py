"""The experiment families a study can name, and the metrics each one reports every epoch.

Kept free of Ray imports so that study validation (spaces/) can use it without importing Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.core.adversarial import metric_name


@dataclass(frozen=True)
class Family:
    name: str
    trainable: str  # "module:function", imported lazily (Ray re-imports it by name on restore)
    metrics: tuple[str, ...]  # reported every epoch: the only valid objectives
    description: str


EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time", "samples_per_s")

FAMILIES: dict[str, Family] = {
    "optimization": Family(
        "optimization", "trainables.optimization:train_optimization", EPOCH_METRICS,
        "configurable CNN / ResNet / VGG-A: activations, losses, optimizers, schedulers, BatchNorm",
    ),
    "adversarial": Family(
        "adversarial", "trainables.adversarial:train_adversarial", EPOCH_METRICS + ("clean_acc",),
        "adversarial training (FGSM-RS, PGD-AT, GAIRAT) with clean / FGSM / PGD / noise accuracy per eps, "
        "and an independent torchattacks check of the final model",
    ),
}


def robust_metric_names(eval_eps) -> tuple[str, ...]:
    """Metric names the robust evaluation reports for a list of eps values (``pgd_acc_eps0.1``, ...)."""
    return tuple(metric_name(attack, eps) for eps in eval_eps for attack in ("fgsm", "pgd", "noise"))
