"""Optimizers (with sign-SGD) and learning-rate schedulers, built from names."""

from __future__ import annotations

from typing import Iterable

import torch
from torch.optim import lr_scheduler


class SignSGD(torch.optim.Optimizer):
    """sign-SGD (Bernstein et al.): step along the sign of the (momentum-averaged) gradient."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                if group["momentum"]:
                    buf = self.state[p].get("momentum_buffer")
                    if buf is None:
                        buf = self.state[p]["momentum_buffer"] = g.clone()
                    else:
                        buf.mul_(group["momentum"]).add_(g, alpha=1 - group["momentum"])
                    g = buf
                p.add_(torch.sign(g), alpha=-group["lr"])
        return loss


OPTIMIZERS = ("sgd", "adam", "adamw", "sign_sgd")
SCHEDULERS = ("none", "step", "plateau", "cosine", "onecycle")


def build_optimizer(name: str, params: Iterable, *, lr: float, momentum: float = 0.9, nesterov: bool = False,
                    weight_decay: float = 0.0) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sign_sgd":
        return SignSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer '{name}'; choose one of: {', '.join(OPTIMIZERS)}")


def build_scheduler(name: str, optimizer, *, epochs: int, steps_per_epoch: int, lr: float, step_size: int = 30,
                    gamma: float = 0.1, plateau_factor: float = 0.1, plateau_patience: int = 5,
                    warmup_epochs: int = 0):
    """Returns (scheduler, per_batch). Plateau schedulers step on validation loss."""
    if name == "none":
        return None, False
    if name == "onecycle":
        return lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch), True
    if name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, factor=plateau_factor, patience=plateau_patience), False
    if name == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    elif name == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs - warmup_epochs))
    else:
        raise ValueError(f"unknown scheduler '{name}'; choose one of: {', '.join(SCHEDULERS)}")
    if warmup_epochs > 0:
        warm = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup_epochs + 1), total_iters=warmup_epochs)
        return lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup_epochs]), False
    return main, False
