"""The rank rule at its boundary: a trial whose outcome could hold a score but whose objective is NaN
holds none, so it ranks with the unscored trials."""

from __future__ import annotations

import pandas as pd

import records


def test_a_completed_trial_without_a_value_ranks_with_the_unscored():
    df = pd.DataFrame({"trial": ["a", "b", "c"], "best_val_acc": [float("nan"), 0.5, 0.9], "best_epoch": [None, 2, 1],
                       "outcome": ["completed", "completed", "failed"]})
    ranked = records.rank(df, "best_val_acc", "max")
    assert list(ranked["trial"]) == ["b", "c", "a"]  # scored first; then the unscored by value, NaN last
