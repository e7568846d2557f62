"""How long a search has left, from the epochs it still has to train and how fast its trials train them.

The epochs left come from the budget: every trial trains up to ASHA's first rung, and at each rung
1 / reduction_factor of the trials go on (with no scheduler every trial trains ``max_epochs``). The
pace is the mean time one trial takes per epoch, measured from the first reported epoch on, and the
trials that run side by side share the work. A trial that ends early or late moves the estimate
by what it changed, not by its share of the elapsed time: the estimate exists after the first epoch,
not only after the first trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def asha_rungs(max_epochs: int, grace_period: int, reduction_factor: float) -> tuple[int, ...]:
    """The epochs at which Ray Tune's ASHA (one bracket) decides to stop a trial, below ``max_epochs``."""
    if grace_period >= max_epochs or reduction_factor <= 1:
        return ()
    count = int(math.log(max_epochs / grace_period) / math.log(reduction_factor) + 1)
    rungs = (int(grace_period * reduction_factor ** k) for k in range(count))
    return tuple(sorted(r for r in set(rungs) if r < max_epochs))


@dataclass(frozen=True)
class EpochPlan:
    """The budget of one trial: ``max_epochs``, cut at ``rungs`` where 1/``reduction_factor`` go on."""

    max_epochs: int
    rungs: tuple[int, ...] = ()
    reduction_factor: float = 1.0

    @classmethod
    def of_budget(cls, budget) -> "EpochPlan":
        """From a study's ``budget`` section."""
        if budget.scheduler != "asha":
            return cls(budget.max_epochs)
        return cls(budget.max_epochs, asha_rungs(budget.max_epochs, budget.grace_period, budget.reduction_factor),
                   float(budget.reduction_factor))

    def epochs_left(self, reached: int = 0) -> float:
        """Expected epochs a trial that has trained ``reached`` epochs (and passed the rungs up to it) still trains."""
        left, share, previous = 0.0, 1.0, reached
        for stop in [*(r for r in self.rungs if r > reached), self.max_epochs]:
            left += share * max(0, stop - previous)
            previous, share = stop, share / self.reduction_factor
        return left


@dataclass
class EtaEstimator:
    """Seconds a search has left; fed with trial starts, reported epochs and trial ends (times in seconds)."""

    plan: EpochPlan
    num_samples: int
    reached: dict[str, int] = field(default_factory=dict)  # running trials: epochs trained
    last_seen: dict[str, float] = field(default_factory=dict)  # running trials: time of their last report
    ended: int = 0
    epoch_seconds: float = 0.0  # summed over the epochs timed
    epochs_timed: int = 0
    side_by_side: int = 1  # the most trials seen running at once

    def started(self, trial_id: str, now: float) -> None:
        self.reached.setdefault(trial_id, 0)
        self.last_seen[trial_id] = now
        self.side_by_side = max(self.side_by_side, len(self.reached))

    def epoch(self, trial_id: str, epoch: int, now: float) -> None:
        if trial_id not in self.reached:  # restored by a resumed search: its pace starts now
            self.started(trial_id, now)
        elif epoch > self.reached[trial_id]:
            self.epoch_seconds += now - self.last_seen[trial_id]
            self.epochs_timed += epoch - self.reached[trial_id]
        self.reached[trial_id] = max(epoch, self.reached[trial_id])
        self.last_seen[trial_id] = now

    def finished(self, trial_id: str) -> None:
        self.reached.pop(trial_id, None)
        self.last_seen.pop(trial_id, None)
        self.ended += 1

    def seconds_left(self, now: float) -> float | None:
        """None until one epoch has been timed; 0 once every trial ended."""
        waiting = max(0, self.num_samples - self.ended - len(self.reached))
        if not self.reached and not waiting:
            return 0.0
        if not self.epochs_timed:
            return None
        pace = self.epoch_seconds / self.epochs_timed
        running = {t: max(0.0, self.plan.epochs_left(e) * pace - (now - self.last_seen[t]))
                   for t, e in self.reached.items()}
        work = sum(running.values()) + waiting * self.plan.epochs_left() * pace
        # the trials share the slots; the longest running trial cannot finish sooner than it trains alone
        return max(work / max(1, self.side_by_side), max(running.values(), default=0.0))
