"""Optimizers (with sign-SGD), learning-rate schedulers and SWA, each from its registry.

Builders declare the config fields they use as keyword-only parameters (see ``registry``):
an optimizer builder is ``(params, *, <fields>)``, a scheduler builder
``(optimizer, epochs, steps_per_epoch, *, <fields>) -> (scheduler | None, per_batch)``.

Seed-faithful defaults: SGD's momentum defaults to 0.9 (seed 003), sign-SGD's to 0 (plain
sign-SGD; signum only when ``momentum`` is set). ``momentum: None`` in the config means
"the optimizer's default". Cosine annealing ends at ``min_lr`` (default 1e-5, seed 003's value
for its cross-entropy and label-smoothing runs; it uses 1e-6 for focal and MSE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch.optim import lr_scheduler
from torch.optim.swa_utils import SWALR, AveragedModel

from .registry import declare, register

OPTIMIZERS = declare("optimizer")
SCHEDULERS = declare("scheduler")


class SignSGD(torch.optim.Optimizer):
    """sign-SGD (Bernstein et al.): step along the sign of the (momentum-averaged) gradient.

    Weight decay is added to the gradient before the sign (L2 regularization, like SGD's), so it
    pulls weights towards zero.
    """

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


# ---------------------------------------------------------------- optimizers
@register("optimizer", "sgd")
def sgd(params: Iterable, *, lr: float, momentum: float | None, nesterov: bool,
        weight_decay: float) -> torch.optim.Optimizer:
    m = 0.9 if momentum is None else momentum
    return torch.optim.SGD(params, lr=lr, momentum=m, nesterov=nesterov and m > 0, weight_decay=weight_decay)


@register("optimizer", "adam")
def adam(params: Iterable, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@register("optimizer", "adamw")
def adamw(params: Iterable, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@register("optimizer", "sign_sgd")
def sign_sgd(params: Iterable, *, lr: float, momentum: float | None, weight_decay: float) -> torch.optim.Optimizer:
    return SignSGD(params, lr=lr, momentum=0.0 if momentum is None else momentum, weight_decay=weight_decay)


# ---------------------------------------------------------------- schedulers
def _warm(optimizer, main, warmup_epochs: int):
    if warmup_epochs > 0:
        warm = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup_epochs + 1), total_iters=warmup_epochs)
        return lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup_epochs]), False
    return main, False


@register("scheduler", "none")
def no_schedule(optimizer, epochs: int, steps_per_epoch: int):
    return None, False


@register("scheduler", "step")
def step(optimizer, epochs: int, steps_per_epoch: int, *, step_size: int, gamma: float, warmup_epochs: int):
    return _warm(optimizer, lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma), warmup_epochs)


@register("scheduler", "cosine")
def cosine(optimizer, epochs: int, steps_per_epoch: int, *, min_lr: float, warmup_epochs: int):
    main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs - warmup_epochs), eta_min=min_lr)
    return _warm(optimizer, main, warmup_epochs)


@register("scheduler", "multistep")
def multistep(optimizer, epochs: int, steps_per_epoch: int, *, milestones: tuple[int, ...], gamma: float):
    """lr times ``gamma`` at each milestone, counted in iterations (batches), stepped every batch: the RegNet
    thesis's 1e-1 -> 1e-2 at 1k -> 1e-3 at 5k -> 1e-4 at 10k -> 1e-5 at 20k iterations."""
    return lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma), True


@register("scheduler", "multistep_fraction")
def multistep_fraction(optimizer, epochs: int, steps_per_epoch: int, *, milestone_fractions: tuple[float, ...],
                       gamma: float):
    """lr times ``gamma`` at fractions of the run, counted in epochs. ``multistep``
    counts iterations; this one scales with the run's length, so one setting serves every epoch budget."""
    at = sorted({max(1, round(f * epochs)) for f in milestone_fractions})
    return lr_scheduler.MultiStepLR(optimizer, milestones=at, gamma=gamma), False


@register("scheduler", "plateau")
def plateau(optimizer, epochs: int, steps_per_epoch: int, *, plateau_factor: float, plateau_patience: int,
            plateau_threshold: float, plateau_cooldown: int):
    """Steps on the validation loss at the end of each epoch; an improvement counts when relatively larger than
    ``plateau_threshold``, and after a reduction it waits ``plateau_cooldown`` epochs (seed 003: 0.001, 2)."""
    return lr_scheduler.ReduceLROnPlateau(optimizer, factor=plateau_factor, patience=plateau_patience,
                                          threshold=plateau_threshold, threshold_mode="rel",
                                          cooldown=plateau_cooldown), False


@register("scheduler", "onecycle")
def onecycle(optimizer, epochs: int, steps_per_epoch: int, *, lr: float):
    """Steps every batch, peaking at ``lr``."""
    return lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch), True


# ---------------------------------------------------------------- SWA (a switch: on / off)
@dataclass
class SWA:
    """Stochastic weight averaging: from epoch ``start`` the average is updated and SWALR owns the lr."""

    start: int
    model: AveragedModel
    scheduler: SWALR


def swa_start_epoch(epochs: int, swa_start: int | None) -> int:
    """The epoch from which SWA averages: ``swa_start``, else the last 25 % of the run."""
    return swa_start if swa_start is not None else int(0.75 * epochs)


@register("swa", "on")
def swa_on(model, optimizer, epochs: int, *, swa_start: int | None, swa_lr: float | None, lr: float) -> SWA:
    """``swa_lr`` defaults to 0.05 lr."""
    return SWA(swa_start_epoch(epochs, swa_start), AveragedModel(model), SWALR(optimizer, swa_lr=swa_lr or lr * 0.05))


@register("swa", "off")
def swa_off(model, optimizer, epochs: int) -> None:
    return None


__all__ = ["SignSGD", "SWA", "swa_start_epoch", "OPTIMIZERS", "SCHEDULERS"]
