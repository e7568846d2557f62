"""The experiment families a study can name, and the metrics each one reports every epoch.

Kept free of Ray imports so that study validation (spaces/) can use it without starting Ray.
"""

from __future__ import annotations

from dataclasses import dataclass


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
}


def robust_metric_names(eval_eps) -> tuple[str, ...]:
    """Metric names reported by the robust evaluation for a list of eps values.

    MLflow metric names allow only letters, digits, ``_ - . / :`` and spaces: hence ``pgd_acc_eps0.1``.
    """
    names = []
    for e in eval_eps:
        tag = eps_tag(e)
        names += [f"fgsm_acc_eps{tag}", f"pgd_acc_eps{tag}", f"noise_acc_eps{tag}"]
    return tuple(names)


def eps_tag(eps: float) -> str:
    return f"{eps:.4g}"
