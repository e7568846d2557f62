"""Loss-landscape smoothness and gradient predictiveness along the gradient (Santurkar et al. 2018), per epoch.

Seed 003 argues that BatchNorm helps because it makes the loss landscape smoother and the gradient more
predictive. At the end of every epoch (``landscape_probe: true``) this evaluator takes a fixed batch of the first
``PROBE_SAMPLES`` training images (no augmentation), the model in its training mode (BatchNorm on batch
statistics, as the optimizer sees it) and the per-sample loss's mean L with gradient g at the current weights
theta, then steps along -g by eta in ``STEP_MULTIPLES`` x the current learning rate:

- ``landscape_loss_range`` = max - min of L(theta - eta g) over those steps (the loss's variation along the
  gradient: smaller = smoother landscape);
- ``landscape_grad_change`` = max over the steps of ||grad L(theta - eta g) - g||_2 (how far the gradient moves:
  smaller = more predictive gradient, Santurkar et al.'s "beta-smoothness" measure).

The probe steps along the gradient itself (not the optimizer's update, e.g. Adam's), with the global RNG forked
and seeded (dropout masks are the same at every step) and leaves the weights and BatchNorm statistics as it found
them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from .metric_names import LANDSCAPE_GRAD_CHANGE, LANDSCAPE_LOSS_RANGE
from .registry import register

PROBE_SAMPLES = 256
STEP_MULTIPLES = (0.5, 1.0, 2.0, 4.0)
def probe(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, lr: float, seed: int = 0,
          multiples=STEP_MULTIPLES) -> dict[str, float]:
    """``LANDSCAPE_METRICS`` of ``model`` (in the mode it is in) on the batch ``(x, y)`` at step sizes lr x multiples."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    theta = [p.detach() for n, p in model.named_parameters() if p.requires_grad]
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}

    def loss_and_grad(weights):
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(seed)
            w = [t.clone().requires_grad_(True) for t in weights]
            loss = loss_fn(functional_call(model, dict(zip(names, w)), (x,), strict=False).float(), y).mean()
            grads = torch.autograd.grad(loss, w)
        return loss.detach(), torch.cat([g.flatten() for g in grads])

    try:
        with torch.inference_mode(False), torch.enable_grad():
            _, g = loss_and_grad(theta)
            losses, changes = [], []
            offsets = torch.split(g, [t.numel() for t in theta])
            for m in multiples:
                stepped = [t - m * lr * o.view_as(t) for t, o in zip(theta, offsets)]
                loss, g_new = loss_and_grad(stepped)
                losses.append(loss)
                changes.append((g_new - g).norm())
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
    losses = torch.stack(losses)
    return {LANDSCAPE_LOSS_RANGE: float(losses.max() - losses.min()),
            LANDSCAPE_GRAD_CHANGE: float(torch.stack(changes).max())}


def landscape_evaluator(trainer) -> dict[str, float]:
    """Trainer hook: ``probe`` on the first ``PROBE_SAMPLES`` training images at the current learning rate."""
    train = trainer.data.train
    x, y = train.x[:PROBE_SAMPLES], train.y[:PROBE_SAMPLES]
    was_training = trainer.model.training
    trainer.train_mode(trainer.model)
    try:
        return probe(trainer.model, trainer.loss_fn, x, y, trainer.optimizer.param_groups[0]["lr"], trainer.cfg.seed)
    finally:
        trainer.model.train(was_training)


# ---------------------------------------------------------------- the landscape switch (landscape_probe on / off)
@register("landscape", "on")
def landscape_on():
    return landscape_evaluator


@register("landscape", "off")
def landscape_off():
    return None


__all__ = ["probe", "landscape_evaluator", "PROBE_SAMPLES", "STEP_MULTIPLES"]
