"""A compact live view of a search, instead of Ray's walls of tables.

One status line (running / done / stopped early / ended / diverged / failed, best so far,
elapsed, ETA), redrawn in place on a terminal and printed every few seconds otherwise, plus one
line per finished trial with its state as ``records.TrialTracker`` decides it. The counts, the best
and the ETA's measurements are saved with Tune's experiment state: a resumed search counts on from
what finished before it (``get_state``/``set_state``). The ETA is ``search.eta``'s.
"""

from __future__ import annotations

import sys
import time

from ray import tune

from records import schema
from records.states import Outcome, TrialTracker

from .eta import EpochPlan, EtaEstimator


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class LiveProgress(tune.Callback):
    def __init__(self, tracker: TrialTracker, num_samples: int, stream=None, every_s: float = 5.0,
                 plan: EpochPlan | None = None, time_budget_s: float | None = None, store_status=None):
        self.tracker, self.metric, self.mode = tracker, tracker.metric, tracker.mode
        self.num_samples = num_samples
        self.eta = EtaEstimator(plan or EpochPlan(tracker.max_epochs), num_samples)
        self.time_budget_s = time_budget_s
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self.start = time.monotonic()
        self.last_print = 0.0
        self.running: set[str] = set()
        self.counts = {k.value: 0 for k in Outcome if k not in (Outcome.RUNNING, Outcome.INTERRUPTED)}  # what this driver ends
        self.best: tuple[float, str] | None = None
        self.store_status = store_status  # () -> "MLflow store not answering since ..." or None (callbacks.py)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["stream"] = None
        return state

    def __setstate__(self, state):  # restored with a resumed search: a new clock, nothing running yet
        self.__dict__.update({"store_status": None, **state})  # pickled before the store's status was shown
        self.stream = sys.stdout
        self.tty = self.stream.isatty()
        self.start, self.last_print, self.running = time.monotonic(), 0.0, set()

    def get_state(self) -> dict:
        """Saved by Tune at each experiment checkpoint: what finished, the best so far, the pace."""
        eta = self.eta
        return {"counts": dict(self.counts), "best": self.best, "tracker": self.tracker,
                "trials_ended": eta.ended, "epoch_seconds": eta.epoch_seconds, "epochs_timed": eta.epochs_timed,
                "side_by_side": eta.side_by_side}

    def set_state(self, state: dict) -> None:
        """A resumed search: trials that were running start again (they report again), the rest is kept."""
        self.counts.update(state["counts"])
        self.best, self.tracker = state["best"], state["tracker"]
        self.eta.ended = state["trials_ended"]
        for key in ("epoch_seconds", "epochs_timed", "side_by_side"):
            setattr(self.eta, key, state[key])

    # ------------------------------------------------------------ Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self.eta.started(trial.trial_id, time.monotonic())
        self._status()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        fresh = self.tracker.result(trial.trial_id, result)
        self.eta.epoch(trial.trial_id, self.tracker.get(trial.trial_id).epoch, time.monotonic())
        if fresh:
            value = self.tracker.get(trial.trial_id).best
            if self.best is None or (value > self.best[0] if self.mode == "max" else value < self.best[0]):
                self.best = (value, trial.trial_id)
        self._status()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.eta.finished(trial.trial_id)
        state = self.tracker.finished(trial.trial_id)
        self.counts[state.kind.value] += 1
        best = self.tracker.get(trial.trial_id).best
        self._line(f"trial {trial.trial_id} {state}" + (f": best {self._reading(trial.trial_id)}" if best is not None else ""))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.eta.finished(trial.trial_id)
        self.counts[Outcome.FAILED.value] += 1
        self._line(f"trial {trial.trial_id} FAILED (see {trial.error_file or 'the trial log'})")

    def on_experiment_end(self, trials, **info):
        self._status(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    # ------------------------------------------------------------ drawing
    def _reading(self, trial_id: str, sep: str = "=") -> str:
        """``metric=value`` at the trial's best epoch: under a constraint the study's metric (the first companion),
        never the penalized score, marked infeasible where the score differs from it."""
        t = self.tracker.get(trial_id)
        if self.metric != schema.OBJECTIVE or not self.tracker.companions:
            return f"{self.metric}{sep}{t.best:.4f}"
        target = self.tracker.companions[0]
        value = t.at_best.get(target)
        if value is None:
            return f"{target}{sep}-"
        return f"{target}{sep}{value:.4f}" + ("" if value == t.best else " (infeasible)")

    def summary(self) -> str:
        c = self.counts
        finished = sum(c.values())
        elapsed = time.monotonic() - self.start
        eta = self.eta.seconds_left(time.monotonic())
        if self.time_budget_s is not None:  # Tune stops every trial when the budget is spent
            eta = min(eta if eta is not None else float("inf"), self.time_budget_s - elapsed)
        best = f"best {self._reading(self.best[1], ' ')} ({self.best[1]})" if self.best else "best -"
        rare = "".join(f" | {c[k]} {k}" for k in (Outcome.ENDED.value, Outcome.DIVERGED.value) if c[k])
        outage = self.store_status() if self.store_status else None
        done, stopped, failed = (c[o.value] for o in (Outcome.COMPLETED, Outcome.STOPPED, Outcome.FAILED))
        return (f"[{_clock(elapsed)}] {len(self.running)} running | {done} done | "
                f"{stopped} stopped early{rare} | {failed} failed | {finished}/{self.num_samples} | {best} | "
                f"ETA {_clock(eta) if eta is not None else '?'}" + (f" | {outage}" if outage else ""))

    def _status(self, force: bool = False):
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\033[K" + self.summary())
            self.stream.flush()
        elif force or now - self.last_print >= self.every_s:
            self.stream.write(self.summary() + "\n")
            self.stream.flush()
            self.last_print = now

    def _line(self, text: str):
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"  {text}\n")
        self._status()
