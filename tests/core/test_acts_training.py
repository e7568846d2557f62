"""Trainer boundaries: every non-finite training loss (NaN, +inf, -inf) ends the run as diverged, and the
step count the schedulers see is the number of optimizer steps an epoch really takes (a trailing
1-sample batch is skipped, a 2-sample one is not)."""

from __future__ import annotations

import math

import pytest
from conftest import TINY

from trainables.core import train
from trainables.core.run import make_trainer
from trainables.core.trainer import Trainer


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_any_non_finite_training_loss_is_a_divergence(monkeypatch, bad):
    real = Trainer.train_epoch

    def blown_up(self):
        _, acc, seen, terms = real(self)
        return bad, acc, seen, terms

    monkeypatch.setattr(Trainer, "train_epoch", blown_up)
    result = train({**TINY, "epochs": 3})
    assert result.status == "diverged"
    assert [m["epoch"] for m in result.history] == [1]  # the run stops at the first such epoch
    assert result.history[0]["diverged"] == 1.0 and math.isnan(result.history[0]["val_acc"])


def _steps_taken(trainer) -> int:
    steps = []
    trainer.optimizer.register_step_post_hook(lambda *a: steps.append(1))
    trainer.train_epoch()
    return len(steps)


@pytest.mark.parametrize("remainder, extra", [(0, 0), (1, 0), (2, 1)])
def test_steps_per_epoch_counts_the_batches_that_train(remainder, extra):
    bs = 32
    trainer = make_trainer({**TINY, "epochs": 2, "batch_size": bs, "max_train_samples": 3 * bs + remainder,
                            "scheduler": "onecycle"})
    assert len(trainer.data.train) == 3 * bs + remainder
    assert trainer.steps_per_epoch == 3 + extra == _steps_taken(trainer)
    assert trainer.scheduler.total_steps == 2 * (3 + extra)  # onecycle ends its cycle at the run's last step
