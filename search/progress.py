"""A compact live view of a search, instead of Ray's walls of tables.

One status line (running / done / stopped early / failed, best so far, elapsed, ETA),
redrawn in place on a terminal and printed every few seconds otherwise, plus one line per
finished or failed trial.
"""

from __future__ import annotations

import sys
import time

from ray import tune


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class LiveProgress(tune.Callback):
    def __init__(self, metric: str, mode: str, num_samples: int, max_epochs: int, stream=None, every_s: float = 5.0):
        self.metric, self.mode, self.num_samples, self.max_epochs = metric, mode, num_samples, max_epochs
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every_s = every_s
        self.start = time.monotonic()
        self.last_print = 0.0
        self.running: set[str] = set()
        self.completed = self.stopped = self.failed = 0
        self.best: tuple[float, str] | None = None
        self.epochs_done: dict[str, int] = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["stream"] = None
        return state

    def __setstate__(self, state):  # restored with a resumed search: a new clock, nothing running yet
        self.__dict__.update(state)
        self.stream = sys.stdout
        self.tty = self.stream.isatty()
        self.start, self.last_print, self.running = time.monotonic(), 0.0, set()

    # ------------------------------------------------------------ Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self._status()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.epochs_done[trial.trial_id] = int(result.get("epoch", result.get("training_iteration", 0)))
        value = result.get(self.metric)
        if isinstance(value, (int, float)):
            better = self.best is None or (value > self.best[0] if self.mode == "max" else value < self.best[0])
            if better:
                self.best = (float(value), trial.trial_id)
        self._status()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        epochs = self.epochs_done.get(trial.trial_id, 0)
        last = trial.last_result.get(self.metric) if trial.last_result else None
        if epochs >= self.max_epochs:
            self.completed += 1
            what = "done"
        else:
            self.stopped += 1
            what = f"stopped early at epoch {epochs}"
        self._line(f"trial {trial.trial_id} {what}: {self.metric}={last:.4f}" if isinstance(last, float)
                   else f"trial {trial.trial_id} {what}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.failed += 1
        self._line(f"trial {trial.trial_id} FAILED (see {trial.error_file or 'the trial log'})")

    def on_experiment_end(self, trials, **info):
        self._status(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    # ------------------------------------------------------------ drawing
    def summary(self) -> str:
        finished = self.completed + self.stopped + self.failed
        elapsed = time.monotonic() - self.start
        eta = elapsed / finished * (self.num_samples - finished) if finished else None
        best = f"best {self.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best else "best -"
        return (f"[{_clock(elapsed)}] {len(self.running)} running | {self.completed} done | "
                f"{self.stopped} stopped early | {self.failed} failed | {finished}/{self.num_samples} | {best} | "
                f"ETA {_clock(eta) if eta is not None else '?'}")

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
