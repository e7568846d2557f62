"""The progress line: an ETA from the epochs' pace and the budget's rungs, counts that survive a resume."""

from __future__ import annotations

import io
import pickle

import pytest

from records.states import TrialTracker
from search.eta import EpochPlan, EtaEstimator, asha_rungs


@pytest.mark.parametrize("max_t, grace, rf", [(8, 1, 2), (3, 1, 2), (27, 1, 3), (10, 2, 2), (9, 3, 3), (4, 4, 2),
                                               (100, 1, 4)])
def test_rungs_are_the_ones_ray_asha_decides_at(max_t, grace, rf):
    from ray.tune.schedulers import ASHAScheduler

    s = ASHAScheduler(time_attr="training_iteration", metric="m", mode="max", max_t=max_t, grace_period=grace,
                      reduction_factor=rf)
    ray_rungs = sorted(m for m, _ in s._brackets[0]._rungs if m < max_t)
    assert list(asha_rungs(max_t, grace, rf)) == ray_rungs


def test_epochs_left_follow_the_rungs():
    plan = EpochPlan(8, (1, 2, 4), 2.0)  # all train 1 epoch, 1/2 a 2nd, 1/4 epochs 3-4, 1/8 epochs 5-8
    assert plan.epochs_left() == pytest.approx(1 + 0.5 + 0.25 * 2 + 0.125 * 4)
    assert plan.epochs_left(2) == pytest.approx(2 + 0.5 * 4)  # passed rung 2: to 4 for sure, half go on to 8
    assert plan.epochs_left(8) == 0
    assert EpochPlan(5).epochs_left(2) == 3  # no scheduler: every trial trains max_epochs


def simulate(plan: EpochPlan, n: int, slots: int, epochs_of, seconds_per_epoch: float = 10.0):
    """A search of n trials, `slots` at a time, each epoch `seconds_per_epoch`; yields (time, estimator) at each
    event and the true end time."""
    est = EtaEstimator(plan, n)
    events, queue, t = [], list(range(n)), 0.0
    running = {}  # trial -> (epochs done, epochs it will train)
    while queue or running:
        while queue and len(running) < slots:
            i = queue.pop(0)
            running[str(i)] = [0, epochs_of(i)]
            est.started(str(i), t)
        t += seconds_per_epoch
        for tid in list(running):
            running[tid][0] += 1
            est.epoch(tid, running[tid][0], t)
            if running[tid][0] == running[tid][1]:
                est.finished(tid)
                del running[tid]
            events.append((t, est.seconds_left(t)))
    return events, t


def test_eta_exists_after_the_first_epoch_and_is_right_without_early_stopping():
    events, end = simulate(EpochPlan(3), 4, 2, lambda i: 3)
    first_time, first = events[0]
    assert first == pytest.approx(end - first_time)  # 10 s in: 50 s left, before any trial ended
    for t, left in events:
        assert left == pytest.approx(end - t)


def test_eta_under_asha_stays_near_the_truth_instead_of_swinging():
    plan = EpochPlan(8, asha_rungs(8, 1, 2), 2.0)
    stops = [1, 1, 2, 1, 8, 1, 4, 2]  # about what ASHA lets through: half at each rung
    events, end = simulate(plan, 8, 2, lambda i: stops[i])
    errors = [abs(left - (end - t)) for t, left in events if end - t > 0]
    assert max(errors) <= 0.3 * end  # never off by more than 30 % of the whole search (the rule of old, elapsed /
    # trials ended * trials left, said 0:30 where 1:30 remained after the first two one-epoch trials)


def test_progress_line_shows_an_eta_before_any_trial_ends():
    from search.progress import LiveProgress

    class Trial:
        def __init__(self, tid):
            self.trial_id, self.error_file = tid, None

    progress = LiveProgress(TrialTracker("val_acc", "max", 4), 3, stream=io.StringIO(), plan=EpochPlan(4))
    progress.on_trial_start(0, [], Trial("a"))
    progress.on_trial_result(0, [], Trial("a"), {"training_iteration": 1, "val_acc": 0.5})
    assert "ETA ?" not in progress.summary() and "0/3" in progress.summary()


def test_progress_counts_what_finished_before_a_resume():
    """Tune pickles the callback when the search starts and saves ``get_state`` at each experiment checkpoint;
    a resumed search is the pickle plus ``set_state``."""
    from search.progress import LiveProgress

    class Trial:
        def __init__(self, tid):
            self.trial_id, self.error_file = tid, "err.txt"

    progress = LiveProgress(TrialTracker("val_acc", "max", 2), 3, stream=io.StringIO(), plan=EpochPlan(2))
    at_start = pickle.dumps(progress)
    for tid, acc in (("a", 0.5), ("b", 0.7)):
        progress.on_trial_start(0, [], Trial(tid))
        for epoch in (1, 2):
            progress.on_trial_result(0, [], Trial(tid), {"training_iteration": epoch, "val_acc": acc})
        progress.on_trial_complete(0, [], Trial(tid))
    saved = progress.get_state()
    resumed = pickle.loads(at_start)
    resumed.set_state(pickle.loads(pickle.dumps(saved)))
    resumed.stream = io.StringIO()
    resumed.on_trial_start(0, [], Trial("c"))
    for epoch in (1, 2):
        resumed.on_trial_result(0, [], Trial("c"), {"training_iteration": epoch, "val_acc": 0.6})
    resumed.on_trial_complete(0, [], Trial("c"))
    line = resumed.summary()
    assert "3/3" in line and "3 done" in line and "best val_acc 0.7000 (b)" in line and "ETA 0:00" in line
