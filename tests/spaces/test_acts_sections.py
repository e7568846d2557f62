"""Study sections at their boundaries: ASHA's grace period may equal the budget's epochs (one past is refused),
and an int parameter's grid includes its ``high``."""

from __future__ import annotations

from pathlib import Path

import pytest

from spaces.sections import Param
from spaces.study import StudyError, load_study

QUICK = Path(__file__).resolve().parents[2] / "spaces" / "quickstart.yaml"  # budget.max_epochs: 8


def test_grace_period_may_equal_max_epochs_but_not_exceed_it():
    assert load_study(QUICK, overrides={"budget.grace_period": 8}).budget.grace_period == 8
    with pytest.raises(StudyError, match=r"grace_period \(9\) must be <= max_epochs \(8\)"):
        load_study(QUICK, overrides={"budget.grace_period": 9})


@pytest.mark.parametrize("low, high, step, grid", [(1, 3, None, [1, 2, 3]), (0, 6, 3, [0, 3, 6]), (2, 2, None, [2])])
def test_an_int_grid_runs_from_low_to_high_inclusive(low, high, step, grid):
    assert Param(type="int", low=low, high=high, step=step).grid_values() == grid
