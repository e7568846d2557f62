"""Ray Tune trainable for the optimization family (CNN / ResNet / VGG-A, optimizers, losses, ...)."""

from __future__ import annotations

from trainables.adapter import run_trial


def train_optimization(config: dict) -> None:
    run_trial(config)
