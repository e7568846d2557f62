"""Losses, all per-sample (reduction='none') so adversarial reweighting (GAIRAT) can weight them."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: dict[str, Callable[..., LossFn]] = {}


def register_loss(name: str):
    def wrap(fn):
        LOSSES[name] = fn
        return fn

    return wrap


@register_loss("cross_entropy")
def cross_entropy(**_) -> LossFn:
    return lambda logits, y: F.cross_entropy(logits, y, reduction="none")


@register_loss("label_smoothing")
def label_smoothing(smoothing: float = 0.1, **_) -> LossFn:
    return lambda logits, y: F.cross_entropy(logits, y, reduction="none", label_smoothing=smoothing)


@register_loss("focal")
def focal(alpha: float = 1.0, gamma: float = 2.0, **_) -> LossFn:
    """Focal loss (Lin et al.): alpha * (1 - p_t)^gamma * CE."""

    def loss(logits, y):
        logp = F.log_softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
        return -alpha * (1 - logp.exp()).pow(gamma) * logp

    return loss


@register_loss("mse")
def mse(**_) -> LossFn:
    """Squared error between the softmax probabilities and one-hot targets, summed over classes."""

    def loss(logits, y):
        onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return (logits.softmax(1) - onehot).pow(2).sum(1)

    return loss


def build_loss(name: str, **kwargs) -> LossFn:
    if name not in LOSSES:
        raise ValueError(f"unknown loss '{name}'; choose one of: {', '.join(LOSSES)}")
    return LOSSES[name](**kwargs)
