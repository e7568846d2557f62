"""The Tune callback that records every trial in MLflow, from the driver.

All writes happen on the driver: trials finishing at the same time never contend for a
``sqlite:///`` store. They happen in order on one writer thread: a trial's next epoch waits for
the driver to take its result, and it no longer waits for the store's commit too (12 ms per epoch
on sqlite; bench/vs_optuna.py). Every experiment checkpoint Tune writes flushes the writer first,
so a resumed search never starts from a point the store has not recorded. After a resume, the
callback finds the child runs that already exist (by trial id) instead of opening duplicates.
Trial states come from ``records.TrialTracker``.

A store that stops answering (a restarted tracking server, a lost database connection) holds the
writes back, in order: each is tried again until it lands, nothing is dropped. ``outage()`` says since
when and how many records wait (the progress line shows it); a flush waiting on the store says so
on stderr every ``REPORT_OUTAGE_EVERY_S``.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from records import schema, writer
from records.schema import EPOCHS_RUN, PARENT, RESOURCES, ROLE, SEARCH, STATE, TRIAL_ID
from records.states import Outcome, TrialTracker

from . import driver

WRITE_METRICS_EVERY_S = 1.0  # how far the UI's curves may lag the trials
SLOW_WRITE_S = 5.0  # a write that has not returned by then: the store is not answering
RETRY_EVERY_S = 5.0  # between tries of a write the store refused for being unreachable
REPORT_OUTAGE_EVERY_S = 15.0


def store_unreachable(error: BaseException) -> bool:
    """A failure of the connection, not of the request: worth trying the same write again later.

    MLflow's REST client gives up with an MlflowException whose cause (or text) is the connection
    error; SQLAlchemy raises OperationalError for a database it lost.
    """
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, (ConnectionError, TimeoutError)) or type(error).__name__ == "OperationalError":
            return True
        text = str(error)
        if "Max retries exceeded" in text or "Connection refused" in text or "could not connect" in text:
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def requested_resources(trial) -> str:
    """What Ray reserves for one trial, as ``cpu=1,gpu=0.25`` (recorded on the trial's run)."""
    try:
        need = trial.placement_group_factory.required_resources
    except AttributeError:
        return ""
    return ",".join(f"{k.lower()}={v:g}" for k, v in sorted(need.items()) if v)


class MlflowTrialLogger(tune.Callback):
    """Logs every trial (params, per-epoch metrics, best epoch, final state) as a child of the search's run."""

    def __init__(self, uri: str, parent_run_id: str, search_name: str, tracker: TrialTracker):
        self.uri, self.parent_run_id, self.search_name, self.tracker = uri, parent_run_id, search_name, tracker
        self._client: MlflowClient | None = None
        self.runs: dict[str, str] = {}
        self.last_beat = 0.0
        self.redone: dict[str, int] = {}
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._buffered: dict[str, tuple] = {}  # trial id -> (trial, metrics not yet written)
        self._last_write = 0.0
        self._busy_since: float | None = None  # wall time the write now running started (writer thread)
        self._unreachable_since: float | None = None  # wall time a write first found the store unreachable

    def __getstate__(self):  # Tune pickles callbacks with the experiment state; clients do not pickle
        self.flush()
        state = dict(self.__dict__)
        state.update(_client=None, _writer=None, _pending=[], _buffered={}, _busy_since=None, _unreachable_since=None)
        state["last_beat"] = 0.0  # a monotonic time means nothing to the next driver: beat at once
        return state

    def __setstate__(self, state):
        """Callbacks pickled by older versions lack the attributes added since: start them empty."""
        self.__dict__.update({"redone": {}, "_writer": None, "_pending": [], "_buffered": {}, "_last_write": 0.0,
                              "_busy_since": None, "_unreachable_since": None, **state})

    def _submit(self, write) -> None:
        """Queue ``write()`` (MLflow calls) on the writer thread; a failed earlier write is raised here."""
        for f in [f for f in self._pending if f.done()]:
            self._pending.remove(f)
            f.result()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")
        self._pending.append(self._writer.submit(self._persist, write))

    def _persist(self, write) -> None:
        """On the writer thread: ``write()``, tried again while the store is unreachable (nothing dropped)."""
        self._busy_since = time.time()
        try:
            while True:
                try:
                    write()
                    self._unreachable_since = None
                    return
                except Exception as e:
                    if not store_unreachable(e):
                        raise
                    self._unreachable_since = self._unreachable_since or self._busy_since
                    time.sleep(RETRY_EVERY_S)
        finally:
            self._busy_since = None

    def outage(self) -> str | None:
        """``store not answering since 12:03:05, 14 records waiting``; None while writes land in time."""
        since = self._unreachable_since or self._busy_since
        if since is None or (self._unreachable_since is None and time.time() - since < SLOW_WRITE_S):
            return None
        waiting = sum(not f.done() for f in self._pending) + sum(len(m) for _, m in self._buffered.values())
        return f"MLflow store not answering since {time.strftime('%H:%M:%S', time.localtime(since))}, " \
               f"{waiting} record{'s' if waiting != 1 else ''} waiting"

    def _write_metrics(self, trial_id: str | None = None) -> None:
        """Queue the buffered epochs' metrics: one batch per run (of one trial, or of all)."""
        buffered = self._buffered
        batches = [buffered.pop(t) for t in ([trial_id] if trial_id else list(buffered)) if t in buffered]
        if trial_id is None:  # the once-a-second clock is for all trials' metrics
            self._last_write = time.monotonic()
        if batches:
            self._submit(lambda: [self.client.log_batch(self._run_for(trial), metrics=m) for trial, m in batches])

    def flush(self) -> None:
        """Write the buffered metrics, wait for every queued write; raise the first that failed."""
        self._write_metrics()
        pending = self._pending
        try:
            for f in pending:
                while True:
                    try:
                        f.result(timeout=REPORT_OUTAGE_EVERY_S)
                        break
                    except FutureTimeout:
                        self._report_waiting()
        finally:
            self._pending = [f for f in pending if not f.done()]
        if self._reported:
            print("MLflow store answers again: every waiting record is written", file=sys.stderr, flush=True)
            self._reported = False

    _reported = False  # a flush said it waits on the store

    def _report_waiting(self) -> None:
        text = self.outage()
        if text and threading.current_thread() is threading.main_thread():
            print(f"{text}; the search waits for it (nothing is lost)", file=sys.stderr, flush=True)
            self._reported = True

    def get_state(self) -> dict:
        """Called by Tune at each experiment checkpoint: the store catches up first; the trials' best epochs
        are saved with it, so a trial resumed past its best epoch keeps that best (not the best since the resume)."""
        self.flush()
        return {"tracker": self.tracker}

    def set_state(self, state: dict) -> None:
        self.tracker = state["tracker"]

    def on_experiment_end(self, trials, **info):
        self.flush()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = writer.client_for(self.uri)
        return self._client

    def setup(self, **info):
        parent = self.client.get_run(self.parent_run_id)
        # What every trial run shares with its parent, read once (these tags never change during a search).
        self.experiment_id = parent.info.experiment_id
        self.inherited_tags = {k: v for k, v in parent.data.tags.items()
                               if k.startswith("rs.") and k not in (ROLE, STATE, schema.BEST_TRIAL, schema.BEST_EPOCH,
                                                                   *driver.DRIVER_TAGS)}
        self.logged: dict[str, int] = {}
        for run in schema.child_runs(self.client, parent):  # after a resume: reuse, never duplicate
            tid = run.data.tags.get(TRIAL_ID)
            if tid:
                self.runs[tid] = run.info.run_id
                self._recall(tid, run)

    def _recall(self, tid: str, run) -> None:
        """The last step a previous driver logged for this trial.

        A driver stopped between logging an epoch and Tune registering that epoch's checkpoint leaves the
        trial to be restored one checkpoint earlier; the epoch it then trains again is not logged twice.
        """
        history = self.client.get_metric_history(run.info.run_id, self.tracker.metric)
        if history:
            self.logged[tid] = max(m.step for m in history)

    def _run_for(self, trial) -> str:
        rid = self.runs.get(trial.trial_id)
        if rid is None:
            run = self.client.create_run(
                self.experiment_id, run_name=f"{self.search_name}/{trial.trial_id}",
                tags={**self.inherited_tags, PARENT: self.parent_run_id, ROLE: "trial", SEARCH: self.search_name,
                      TRIAL_ID: trial.trial_id, STATE: Outcome.RUNNING.value, RESOURCES: requested_resources(trial)})
            rid = self.runs[trial.trial_id] = run.info.run_id
            config = {k: v for k, v in trial.config.items() if not k.startswith("rs_")}
            self.client.log_batch(rid, params=writer.as_params(config))
            self.client.log_dict(rid, config, "config.json")
        return rid

    def on_step_begin(self, iteration, trials, **info):
        """The driver's heartbeat on the parent run (`search ls` tells a live search from a dead driver), and
        the epochs' metrics once a second: one store transaction per run, not one per epoch."""
        if time.monotonic() - self._last_write >= WRITE_METRICS_EVERY_S:
            self._write_metrics()
        if time.monotonic() - self.last_beat >= driver.HEARTBEAT_EVERY_S:
            self.last_beat = time.monotonic()
            self._submit(lambda: driver.heartbeat(self.client, self.parent_run_id))

    def on_trial_start(self, iteration, trials, trial, **info):
        def write():
            known = trial.trial_id in self.runs
            rid = self._run_for(trial)
            if known:  # resumed after an interruption: running again
                self.client.set_tag(rid, STATE, Outcome.RUNNING.value)

        self._submit(write)

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A trial restarted after a failure (a lost node, a crash): count, restored epoch and cause on its run."""
        n = trial.num_failures
        restored = trial.latest_checkpoint_result
        epoch = int(restored.metrics.get("training_iteration", 0)) if restored else 0
        text = Path(trial.error_file).read_text() if trial.error_file and Path(trial.error_file).is_file() else ""
        lines = [x for x in text.strip().splitlines() if x.strip()]
        error = lines[-1] if lines else "unknown error"

        def write():
            rid = self._run_for(trial)
            self.client.set_tag(rid, "rs.restarts", str(n))
            self.client.set_tag(rid, f"rs.restart_{n}", f"from checkpoint epoch {epoch}: {error[:400]}")
            self.client.log_text(rid, text[-8000:] or error, f"restarts/restart_{n}.txt")

        self._submit(write)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.result(trial.trial_id, result)
        t = self.tracker.get(trial.trial_id)
        if t.epoch <= getattr(self, "logged", {}).get(trial.trial_id, 0):  # an epoch trained again after a resume
            self.redone[trial.trial_id] = count = self.redone.get(trial.trial_id, 0) + 1
            self._submit(lambda: self.client.set_tag(self._run_for(trial), "rs.epochs_redone", str(count)))
            return
        # A metric named like a parameter (the scheduled `lr`) would share the parameter's column in the UI.
        metrics = writer.as_metrics({f"{k}_epoch" if k in trial.config else k: v for k, v in result.items()}, t.epoch)
        if t.best is not None:  # the running best and its epoch, every epoch (a curve in the UI)
            ts = metrics[0].timestamp if metrics else 0
            metrics += [Metric(schema.best_key(self.tracker.metric), t.best, ts, t.epoch),
                        Metric(schema.best_key("epoch"), float(t.best_epoch), ts, t.epoch)]
        self._buffered.setdefault(trial.trial_id, (trial, []))[1].extend(metrics)

    def _finish(self, trial, state, status: str, error_text: str | None = None) -> None:
        self._write_metrics(trial.trial_id)
        t = self.tracker.get(trial.trial_id)
        at_best = [Metric(schema.at_best_key(k), v, 0, t.best_epoch) for k, v in (t.at_best or {}).items()]
        epoch = t.epoch

        def write():
            rid = self._run_for(trial)
            if error_text is not None:
                self.client.log_text(rid, error_text, "error.txt")
            self.client.log_batch(rid, metrics=at_best, tags=[RunTag(STATE, str(state)), RunTag(EPOCHS_RUN, str(epoch))])
            self.client.set_terminated(rid, status)

        self._submit(write)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, self.tracker.finished(trial.trial_id), "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        error, text = "unknown error", None
        if trial.error_file and Path(trial.error_file).is_file():
            error = text = Path(trial.error_file).read_text()[-4000:]
        self._finish(trial, self.tracker.failed(trial.trial_id, error), "FAILED", error_text=text)


class AshaState(tune.Callback):
    """Saves ASHA's rungs with the experiment, so a resumed search stops trials as an uninterrupted one would.

    Tune checkpoints the searcher and the callbacks but not the scheduler: after ``Tuner.restore`` ASHA starts
    with empty rungs, and a trial whose first result after the resume lies past a rung it already passed is
    judged again at that rung, late (at epoch 28 for the rung at 27) and against only the trials recorded
    since the resume. This callback is pickled with the scheduler it holds (one object graph in Tune's
    tuner.pkl), and its state is restored before the trials are re-added.
    """

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def get_state(self) -> dict:
        return {"rungs": [[(m, dict(rec)) for m, rec in b._rungs] for b in self.scheduler._brackets]}

    def set_state(self, state: dict) -> None:
        for bracket, rungs in zip(self.scheduler._brackets, state["rungs"]):
            bracket._rungs = [(m, dict(rec)) for m, rec in rungs]
