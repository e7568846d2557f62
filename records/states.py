"""Trial and search states, declared once: every writer (the MLflow callback, the driver, reproduce)
and every reader (the progress line, the table, ``ls``, the report) imports them from here.

A trial's ``rs.state`` tag is ``TrialState``'s one line (``stopped early by ASHA at epoch 3``) whose first
word is its ``Outcome``; a search's is a ``SearchState`` (``finished: 2 of 3 seeds`` for a reproduction).
``parse`` and ``parse_search_state`` are the only readers of those lines.

``TrialTracker`` follows each trial's reported results on the driver (it needs no Ray): its last
epoch, its best epoch under the one best-epoch rule, whether the scheduler stopped it, and whether
it diverged. Both Tune callbacks own one and ask it for the state when a trial ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import trainables.core.metric_names as names


class Outcome(str, Enum):
    """A trial's state kind, in the order reports list them. Only the first three hold a rankable score."""

    COMPLETED = "completed"
    STOPPED = "stopped"  # early, by ASHA
    ENDED = "ended"  # by the search's time budget
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # left running by a driver that stopped (Ctrl-C, a lost driver; search/driver.py)
    RUNNING = "running"

    def __str__(self) -> str:
        return self.value


class SearchState(str, Enum):
    """A search's (or a reproduction's) state, its parent run's ``rs.state``."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"  # every trial failed
    INTERRUPTED = "interrupted"  # Ctrl-C: resumable
    DRIVER_LOST = "driver lost"  # no heartbeat for longer than the driver's timeout: resumable

    def __str__(self) -> str:
        return self.value

    def tag(self, detail: str = "") -> str:
        """The ``rs.state`` tag: the state, and after a colon what it says of it (``finished: 2 of 3 seeds``)."""
        return f"{self.value}: {detail}" if detail else self.value


OUTCOMES = tuple(o.value for o in Outcome)
RANKABLE = (Outcome.COMPLETED.value, Outcome.STOPPED.value, Outcome.ENDED.value)
DIVERGED_METRIC = names.DIVERGED  # 1.0 on the epoch a run stops at a non-finite training loss


def parse_search_state(tag: str | None) -> SearchState | None:
    """The state of a search's ``rs.state`` tag (None for a tag no state begins)."""
    tag = (tag or "").strip()
    return next((s for s in SearchState if tag == s.value or tag.startswith(f"{s.value}:")), None)


@dataclass(frozen=True)
class TrialState:
    kind: Outcome
    epoch: int = 0
    detail: str = ""

    def __str__(self) -> str:
        """The ``rs.state`` tag: one line a person reads, whose first word is the kind."""
        if self.kind is Outcome.STOPPED:
            return f"stopped early by ASHA at epoch {self.epoch}"
        if self.kind is Outcome.ENDED:
            return f"ended by the time budget at epoch {self.epoch}"
        if self.kind is Outcome.DIVERGED:
            return f"diverged at epoch {self.epoch}: non-finite training loss"
        if self.kind is Outcome.FAILED:
            return f"failed: {self.detail}" if self.detail else "failed"
        return self.kind.value


def decide(*, epochs: int, max_epochs: int, error: str | None = None, diverged_at: int | None = None,
           stopped_by_scheduler: bool = False) -> TrialState:
    """The one rule. An error wins; then divergence; then a full budget; then the scheduler's stop;
    anything else ended before its budget without a stop decision: the search's time budget."""
    if error is not None:
        lines = error.strip().splitlines()
        return TrialState(Outcome.FAILED, epochs, (lines[-1] if lines else "unknown error")[:250])
    if diverged_at is not None:
        return TrialState(Outcome.DIVERGED, diverged_at)
    if epochs >= max_epochs:
        return TrialState(Outcome.COMPLETED, epochs)
    if stopped_by_scheduler:
        return TrialState(Outcome.STOPPED, epochs)
    return TrialState(Outcome.ENDED, epochs)


def outcome(state: str | None) -> str:
    """The kind of a trial's ``rs.state`` tag (``completed``, ``stopped``, ...); ``unknown`` if none matches."""
    state = (state or "").strip()
    return next((o.value for o in Outcome if state.startswith(o.value)), state or "unknown")


def better(value: float, than: float | None, mode: str) -> bool:
    """Strictly better under ``mode``; NaN is never better."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return than is None or (value > than if mode == "max" else value < than)


@dataclass
class _Trial:
    epoch: int = 0
    best: float | None = None
    best_epoch: int = 0
    at_best: dict[str, float] = field(default_factory=dict)
    stopped: bool = False
    diverged_at: int | None = None


class TrialTracker:
    """Per-trial bookkeeping from reported results (driver side, picklable with Tune's state).

    Best epoch of a trial: the epoch with its best ``metric``; among equal values the *latest*
    such epoch, because that is the checkpoint Ray's checkpoint manager keeps for equal scores
    (``CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=metric)``).
    """

    def __init__(self, metric: str, mode: str, max_epochs: int, companions: tuple[str, ...] = ()):
        self.metric, self.mode, self.max_epochs = metric, mode, max_epochs
        self.companions = tuple(dict.fromkeys(c for c in companions if c and c != metric))
        self.trials: dict[str, _Trial] = {}

    def result(self, trial_id: str, result: dict[str, Any]) -> bool:
        """Record one epoch's result; True when it is the trial's new best epoch."""
        t = self.trials.setdefault(trial_id, _Trial())
        t.epoch = int(result.get("epoch", result.get("training_iteration", t.epoch + 1)))
        t.stopped = bool(result.get("done"))  # Tune sets done=True on the result a scheduler stops at
        if float(result.get(DIVERGED_METRIC, 0.0) or 0.0) >= 1.0:
            t.diverged_at = t.epoch
        value = result.get(self.metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            return False
        value = float(value)
        if t.best is None or better(value, t.best, self.mode) or value == t.best:  # ties: the latest epoch
            t.best, t.best_epoch = value, t.epoch
            t.at_best = {c: float(result[c]) for c in self.companions if isinstance(result.get(c), (int, float))}
            return True
        return False

    def get(self, trial_id: str) -> _Trial:
        return self.trials.setdefault(trial_id, _Trial())

    def finished(self, trial_id: str) -> TrialState:
        t = self.get(trial_id)
        return decide(epochs=t.epoch, max_epochs=self.max_epochs, diverged_at=t.diverged_at,
                      stopped_by_scheduler=t.stopped)

    def failed(self, trial_id: str, error: str) -> TrialState:
        t = self.get(trial_id)
        return decide(epochs=t.epoch, max_epochs=self.max_epochs, error=error)
