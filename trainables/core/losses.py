"""The training objective = a per-sample loss + weighted batch-level terms.

- **Per-sample losses** (registry ``loss``): a builder ``(*, <config fields>)`` returns
  ``fn(scores, y) -> (B,)`` per-sample losses, so adversarial reweighting (GAIRAT) can weight
  them. ``none`` is zero: for heads whose objective lives entirely in batch terms.
- **Batch-level terms** (registry ``term``): a builder ``(*, <config fields>)`` returns a
  ``Term(name, weight, fn)`` with ``fn(out: StepOutput, y, model) -> scalar``, or ``None``
  when its weight is off. Every registered term builder is called for every run; each built
  term is logged per epoch as ``train_<name>`` (its unweighted mean over batches), and
  ``train_loss`` is the total: mean per-sample loss + sum of weight * term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .metric_names import TERMS_ON
from .registry import build, config_fields, declare, register, registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES = declare("loss")
TERMS = declare("term")


@register("loss", "cross_entropy")
def cross_entropy() -> LossFn:
    return lambda scores, y: F.cross_entropy(scores, y, reduction="none")


def smoothed_to_others(scores: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-sample cross-entropy against 1 - eps on the true class and eps / (K - 1) on each other class
    (seeds 000/001, eq. 3)."""
    logp = F.log_softmax(scores.float(), dim=1)
    true = logp.gather(1, y[:, None]).squeeze(1)
    k = scores.shape[1]
    return -(1 - eps) * true - eps / (k - 1) * (logp.sum(1) - true)


# Where label smoothing puts its mass eps: name -> per-sample loss (scores, y, eps).
LABEL_SMOOTHING_TARGETS = declare("label_smoothing_to", {
    # (1 - eps) one-hot + eps/K uniform: PyTorch's label_smoothing and seed 003's LabelSmoothingCrossEntropy
    "all": lambda scores, y, eps: F.cross_entropy(scores, y, reduction="none", label_smoothing=eps),
    "others": smoothed_to_others,
})


@register("loss", "label_smoothing")
def label_smoothing(*, label_smoothing: float, label_smoothing_to: str) -> LossFn:
    """Cross-entropy against smoothed targets; ``label_smoothing_to`` says which (``LABEL_SMOOTHING_TARGETS``)."""
    smoothed = LABEL_SMOOTHING_TARGETS[label_smoothing_to]
    return lambda scores, y: smoothed(scores, y, label_smoothing)


@register("loss", "focal")
def focal(*, focal_alpha: float, focal_gamma: float) -> LossFn:
    """Focal loss (Lin et al.): alpha * (1 - p_t)^gamma * CE."""

    def loss(scores, y):
        logp = F.log_softmax(scores.float(), dim=1).gather(1, y[:, None]).squeeze(1)
        return -focal_alpha * (1 - logp.exp()).pow(focal_gamma) * logp

    return loss


@register("loss", "mse")
def mse() -> LossFn:
    """Seed 003's ``nn.MSELoss()`` on the raw scores vs one-hot targets: the batch mean of these
    per-sample values is the mean over all elements, exactly ``nn.MSELoss`` (reduction='mean')."""

    def loss(scores, y):
        onehot = F.one_hot(y, scores.shape[1]).to(scores.dtype)
        return (scores - onehot).pow(2).mean(1)

    return loss


@register("loss", "softmax_mse")
def softmax_mse() -> LossFn:
    """Squared error between softmax probabilities and one-hot targets, summed over classes (Brier score)."""

    def loss(scores, y):
        onehot = F.one_hot(y, scores.shape[1]).to(scores.dtype)
        return (scores.softmax(1) - onehot).pow(2).sum(1)

    return loss


@register("loss", "none")
def no_loss() -> LossFn:
    """No per-sample term: the batch-level terms carry the objective (e.g. a Gaussian-latent head)."""
    return lambda scores, y: scores.new_zeros(len(y), dtype=torch.float32)


# ---------------------------------------------------------------- batch-level terms
TermFn = Callable[[Any, torch.Tensor, torch.nn.Module], torch.Tensor]


@dataclass(frozen=True)
class Term:
    """A batch-level loss term: ``weight * fn(out, y, model)`` is added to the loss."""

    name: str  # logged as train_<name>
    weight: float
    fn: TermFn


@register("term", "l1")
def l1(*, l1: float) -> Term | None:
    """L1 penalty on the trainable weight matrices / kernels (not biases or BatchNorm): sum |w|."""
    if not TERMS_ON["l1"](l1=l1):
        return None

    def penalty(out, y, model):
        return sum(p.abs().sum() for p in model.parameters() if p.dim() > 1 and p.requires_grad)

    return Term("l1", l1, penalty)


@register("term", "circle")
def circle(*, circle_weight: float, circle_m: float, circle_gamma: float) -> Term | None:
    """Circle loss (Sun et al. 2020) on the L2-normalized penultimate features (see ``circle``): built by
    the ``circle`` switch (its ``on`` entry declares m and gamma, so they act only with a weight)."""
    given = {"circle_weight": circle_weight, "circle_m": circle_m, "circle_gamma": circle_gamma}
    entry = registry("circle").lookup("on" if TERMS_ON["circle"](circle_weight=circle_weight) else "off")
    return entry(**{f: given[f] for f in config_fields(entry)})


@register("circle", "on")
def circle_on(*, circle_weight: float, circle_m: float, circle_gamma: float) -> Term:
    from .circle import CircleLoss

    loss = CircleLoss(circle_m, circle_gamma)
    return Term("circle", circle_weight, lambda out, y, model: loss(out.features, y))


@register("circle", "off")
def circle_off() -> None:
    return None


def build_terms(cfg: Any) -> list[Term]:
    """Every registered term the config switches on, in registration order."""
    return [t for t in (build("term", name, cfg) for name in TERMS) if t is not None]


__all__ = ["LABEL_SMOOTHING_TARGETS", "smoothed_to_others", "LOSSES", "TERMS", "Term", "LossFn", "build_terms"]
