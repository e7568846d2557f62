"""Loss settings act on exactly what they name: the L1 term sums |w| of the trainable weight matrices and
kernels only (not biases, not BatchNorm, not frozen weights)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.core.losses import l1


def test_l1_penalizes_trainable_weight_matrices_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3), nn.Linear(3, 2))
    model[4].weight.requires_grad_(False)  # frozen: not penalized
    term = l1(l1=0.01)
    assert term.weight == 0.01
    expected = model[0].weight.abs().sum() + model[3].weight.abs().sum()
    assert term.fn(None, None, model).item() == pytest.approx(expected.item())
    assert l1(l1=0.0) is None
