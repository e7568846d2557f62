"""Timestamps of the service's phases, taken by wrapping a few functions from outside.

The service's code is not edited for the measurement: ``install()`` wraps ``init_ray``,
``start_parent``, ``Tuner.fit`` and the wrap-up helpers, and adds one Tune callback that stamps
every trial start, result and completion. ``breakdown()`` turns the stamps into the seconds
of each phase. Used by ``bench/vs_optuna.py`` in its service child process.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from pathlib import Path

EVENTS: list[dict] = []


def mark(event: str, **fields) -> None:
    EVENTS.append({"t": time.time(), "event": event, **fields})


def _wrap(owner, name: str, label: str) -> None:
    fn = getattr(owner, name, None)
    if fn is None:  # renamed since: that phase is simply not stamped
        return

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        mark(f"{label}_start")
        try:
            return fn(*args, **kwargs)
        finally:
            mark(f"{label}_end")

    setattr(owner, name, timed)


def install() -> None:
    """Wrap the service's phases (call after importing ``search.runner``, before running a search)."""
    from ray import tune

    import search.finish as finish
    import search.runner as runner
    from records import writer

    class TimingCallback(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            mark("trial_start", trial=trial.trial_id)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            mark("result", trial=trial.trial_id, epoch_time=float(result.get("epoch_time", 0.0)),
                 iteration=int(result.get("training_iteration", 0)))

        def on_trial_complete(self, iteration, trials, trial, **info):
            mark("trial_end", trial=trial.trial_id)

    TimingCallback.__module__, TimingCallback.__qualname__ = __name__, "TimingCallback"  # pickled by reference
    globals()["TimingCallback"] = TimingCallback
    _wrap(runner, "init_ray", "ray_init")
    _wrap(writer, "start_parent", "parent_run")
    _wrap(tune.Tuner, "fit", "fit")
    for name in ("log_best_model", "mark_pareto"):
        _wrap(finish, name, name)
    callbacks_for = runner.callbacks_for

    def with_timing(*args, **kwargs):
        return callbacks_for(*args, **kwargs) + [TimingCallback()]

    runner.callbacks_for = with_timing


def save(path: Path) -> None:
    Path(path).write_text(json.dumps(EVENTS))


def trial_spans(events: list[dict]) -> dict[str, dict]:
    """Per trial: start, end, seconds inside the core's epochs, epochs run."""
    spans: dict[str, dict] = {}
    for e in events:
        if e["event"] == "trial_start":
            spans.setdefault(e["trial"], {"start": e["t"], "train": 0.0, "epochs": 0})
        elif e["event"] == "result":
            s = spans.setdefault(e["trial"], {"start": e["t"], "train": 0.0, "epochs": 0})
            s["train"] += e["epoch_time"]
            s["epochs"] += 1
            s["end"] = e["t"]
        elif e["event"] == "trial_end":
            spans.setdefault(e["trial"], {"start": e["t"], "train": 0.0, "epochs": 0})["end"] = e["t"]
    return spans


def breakdown(events: list[dict], spawn: float, exit_: float, slots: int) -> dict[str, float]:
    """Seconds of each phase of one service process, from its stamps and the parent's spawn/exit times.

    ``slots`` is the number of trials that can run at once: the per-trial overhead is the slot-time
    inside ``Tuner.fit`` not spent in the core's epochs, divided by the number of trials.
    """
    t = {}
    for e in events:
        t.setdefault(e["event"], e["t"])  # the first of each
    spans = trial_spans(events)
    results = [e for e in events if e["event"] == "result"]
    first = min(results, key=lambda e: e["t"]) if results else None
    train = sum(s["train"] for s in spans.values())
    fit = t["fit_end"] - t["fit_start"]
    per_trial_wall = [s["end"] - s["start"] - s["train"] for s in spans.values() if "end" in s]
    out = {
        "interpreter_and_imports": t["ray_init_start"] - spawn,
        "ray_start": t["ray_init_end"] - t["ray_init_start"],
        "parent_run": t["parent_run_end"] - t["parent_run_start"],
        "setup_other": (t["fit_start"] - t["ray_init_end"]) - (t["parent_run_end"] - t["parent_run_start"]),
        "first_trial_start": (first["t"] - first["epoch_time"] - t["fit_start"]) if first else float("nan"),
        "fit": fit,
        "training_in_epochs": train,
        "per_trial_overhead": (fit * slots - train) / max(1, len(spans)),
        "per_trial_in_actor_overhead": statistics.median(per_trial_wall) if per_trial_wall else float("nan"),
        "wrap_up_in_search": t["main_end"] - t["fit_end"],
        "exit": exit_ - t["main_end"],
        "total": exit_ - spawn,
        "trials": len(spans),
        "epochs": sum(s["epochs"] for s in spans.values()),
    }
    return out
