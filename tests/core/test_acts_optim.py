"""Optimizer and schedule settings act at their boundaries: the user's ``nesterov``, a milestone fraction
that rounds to epoch 0, SWA's default start (the last 25 % of the run), ``swa_lr``'s default."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY

from trainables.core import train
from trainables.core.run import make_trainer


@pytest.mark.parametrize("momentum, nesterov, expected", [(0.9, True, True), (0.9, False, False), (0.0, True, False)])
def test_sgd_runs_nesterov_as_asked(momentum, nesterov, expected):
    trainer = make_trainer({**TINY, "optimizer": "sgd", "momentum": momentum, "nesterov": nesterov})
    assert trainer.optimizer.param_groups[0]["nesterov"] is expected


def test_nesterov_changes_the_trained_weights():
    def weights(nesterov):
        result = train({**TINY, "epochs": 1, "optimizer": "sgd", "momentum": 0.9, "nesterov": nesterov, "lr": 0.05})
        return torch.cat([p.detach().flatten() for p in result.model.parameters()])

    assert not torch.allclose(weights(True), weights(False))


def test_a_milestone_fraction_below_one_epoch_decays_after_the_first_epoch():
    result = train({**TINY, "epochs": 4, "scheduler": "multistep_fraction", "milestone_fractions": [0.1], "gamma": 0.1,
                    "lr": 0.1})
    assert [round(m["lr"], 6) for m in result.history] == [0.1, 0.01, 0.01, 0.01]


@pytest.mark.parametrize("epochs, swa_start, expected", [(8, None, 6), (4, None, 3), (10, None, 7), (8, 2, 2)])
def test_swa_starts_at_the_given_epoch_else_in_the_last_quarter(epochs, swa_start, expected):
    trainer = make_trainer({**TINY, "epochs": epochs, "swa": True, "swa_start": swa_start, "lr": 0.2})
    assert trainer.swa.start == expected
    assert trainer.swa.scheduler.optimizer is trainer.optimizer
    assert trainer.swa.scheduler.get_last_lr()[0] == pytest.approx(0.2)  # SWALR has not taken over yet
    assert [g["swa_lr"] for g in trainer.optimizer.param_groups] == [pytest.approx(0.01)] * len(trainer.optimizer.param_groups)
