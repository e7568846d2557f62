"""Attack settings act: a targeted PGD with restarts keeps, per sample, the restart closest to the target
(lowest loss toward it) when none reaches it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.core.attacks import pgd


def test_targeted_restarts_keep_the_lowest_loss_toward_the_target():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(12, 1, 4, 4)
    target = (model(x).argmax(1) + 1) % 3  # every sample starts away from its target
    eps, steps, step = 0.002, 1, 0.0002  # too small to reach any target; a short step keeps the random starts apart
    runs = [pgd(model, x, None, eps, steps=steps, step_size=step, targeted=True, target=target, generator=g)
            for g in [torch.Generator().manual_seed(5)] for _ in range(3)]
    kept = pgd(model, x, None, eps, steps=steps, step_size=step, targeted=True, target=target, restarts=3,
               generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        losses = torch.stack([F.cross_entropy(model(r), target, reduction="none") for r in runs])
        assert not bool((torch.stack([model(r).argmax(1) for r in runs]) == target).any())
        assert bool((losses.max(0).values > losses.min(0).values).all())  # the restarts really differ
        best = losses.argmin(0)
        expected = torch.stack(runs)[best, torch.arange(len(x))]
    assert torch.allclose(kept, expected)
