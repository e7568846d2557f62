"""The ETA at its boundaries: a report that covers several epochs counts them all in the pace, and the
longest running trial bounds the time left however many slots the search had."""

from __future__ import annotations

import pytest

from search.eta import EpochPlan, EtaEstimator


def test_a_report_covering_two_epochs_counts_two_epochs_of_pace():
    est = EtaEstimator(EpochPlan(4), 1)
    est.started("a", 0.0)
    est.epoch("a", 2, 20.0)  # two epochs in 20 s: 10 s each
    assert est.seconds_left(20.0) == pytest.approx(2 * 10.0)


def test_the_last_long_trial_bounds_the_time_left():
    est = EtaEstimator(EpochPlan(10), 4)
    for tid in "abcd":
        est.started(tid, 0.0)
    for tid in "abcd":
        est.epoch(tid, 1, 10.0)
    for tid in "bcd":
        est.finished(tid)
    assert est.side_by_side == 4
    assert est.seconds_left(10.0) == pytest.approx(9 * 10.0)  # trial a alone: 9 epochs at 10 s, no slots to share
