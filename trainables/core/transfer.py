"""Freeze and fine-tune: which parts of a network train, starting weights, k labelled samples per class.

Freezing means more than ``requires_grad = False``: a frozen part's BatchNorm running
statistics would still move in train mode (and its dropout would still drop), so a frozen part
is kept in eval mode for the whole phase. What is frozen:

- ``trunk``: the whole backbone (every feature layer); only the head trains (a linear probe).
- ``all_but_last_block``: the backbone except its last block (the last parameterized module,
  descending into ``nn.Sequential`` stages: a ResNet's last residual block, the CNN's last
  fully connected layer before the head); that block and the head train.
- ``none``: everything trains (plain fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .checkpoint import read_checkpoint
from .data import Split
from .registry import declare, register

FREEZE = declare("freeze")  # mode -> fn(model) -> the modules whose parameters are frozen
FreezeFn = Callable[[nn.Module], list[nn.Module]]


def register_freeze(name: str):
    return register("freeze", name)


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def last_block(backbone: nn.Module) -> nn.Module:
    """The backbone's last parameterized child, descending through ``nn.Sequential`` containers."""
    children = [c for c in backbone.children() if _has_params(c)]
    if not children:
        return backbone
    last = children[-1]
    return last_block(last) if isinstance(last, nn.Sequential) else last


@register_freeze("none")
def freeze_none(model: nn.Module) -> list[nn.Module]:
    return []


@register_freeze("trunk")
def freeze_trunk(model: nn.Module) -> list[nn.Module]:
    return [model.backbone]


@register_freeze("all_but_last_block")
def freeze_all_but_last_block(model: nn.Module) -> list[nn.Module]:
    """Every leaf module of the backbone outside its last block (so the block's own BN keeps training)."""
    keep = {id(m) for m in last_block(model.backbone).modules()}
    return [m for m in model.backbone.modules() if id(m) not in keep and not any(True for _ in m.children())]


def frozen_modules(model: nn.Module, mode: str) -> list[nn.Module]:
    return FREEZE.lookup(mode)(model)


@dataclass(frozen=True)
class FinetunePlan:
    """The fine-tuning section of a config (its fields act only when ``finetune_dataset`` is set)."""

    dataset: str
    per_class: int
    epochs: int
    lr: float
    freeze: str


@register("finetune", "on")
def finetune_on(dataset: str, *, finetune_per_class: int, finetune_epochs: int, finetune_lr: float,
                freeze: str) -> FinetunePlan:
    return FinetunePlan(dataset, finetune_per_class, finetune_epochs, finetune_lr, freeze)


@register("finetune", "off")
def finetune_off(dataset: None) -> None:
    return None


def apply_freeze(model: nn.Module, mode: str) -> list[nn.Module]:
    """Set ``requires_grad = False`` on the frozen parts and return them (the trainer's ``frozen_parts_eval``
    then keeps them in eval mode)."""
    frozen = frozen_modules(model, mode)
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return frozen


def per_class_subset(split: Split, k: int, seed: int = 0) -> Split:
    """``k`` samples of every class present in ``split``, drawn by ``seed`` (the same draw every time).

    Raises when a class has fewer than ``k`` samples: a smaller class would silently change k.
    """
    y = split.y.cpu()
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        if len(idx) < k:
            raise ValueError(f"class {c} has {len(idx)} samples, fewer than finetune_per_class = {k}")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    order = torch.cat(picks)
    order = order[torch.randperm(len(order), generator=g)].to(split.y.device)
    return Split(split.x[order], split.y[order])


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a trainer checkpoint's model weights (or a bare state dict) into ``model``; shapes must match."""
    if str(path).startswith("search:"):
        raise FileNotFoundError(f"init_from {path}: `search run` resolves search:NAME to that search's best model; "
                                "outside a search, download it with records.download_checkpoint")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init_from: no checkpoint at {path}")
    state = read_checkpoint(path, needs=())
    weights = state.get("model", state)
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    wrong = [k for k, v in weights.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ValueError(f"init_from {path}: the checkpoint does not fit this model "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}, shape mismatch {wrong[:3]})")
    model.load_state_dict(weights)
