"""The progress line acts on the study's settings: the best so far follows the objective's mode, and a time
budget caps the ETA at what is left of it (not at the whole budget)."""

from __future__ import annotations

import io
import time

import pytest

from records.states import TrialTracker
from search.eta import EpochPlan

pytest.importorskip("ray")

from search.progress import LiveProgress  # noqa: E402


class _Trial:
    def __init__(self, tid):
        self.trial_id, self.error_file = tid, None


def test_the_best_so_far_is_the_lowest_when_the_mode_is_min():
    progress = LiveProgress(TrialTracker("val_loss", "min", 2), 2, stream=io.StringIO(), plan=EpochPlan(2))
    for tid, loss in (("a", 0.5), ("b", 0.3), ("c", 0.4)):
        progress.on_trial_start(0, [], _Trial(tid))
        progress.on_trial_result(0, [], _Trial(tid), {"training_iteration": 1, "val_loss": loss})
    assert "best val_loss 0.3000 (b)" in progress.summary()


def test_the_eta_is_at_most_what_is_left_of_the_time_budget():
    progress = LiveProgress(TrialTracker("val_acc", "max", 2), 4, stream=io.StringIO(), plan=EpochPlan(2),
                            time_budget_s=100.0)
    progress.start = time.monotonic() - 89.5  # 89.5 s of the 100 s budget spent, nothing timed yet
    assert "ETA 0:10" in progress.summary()
