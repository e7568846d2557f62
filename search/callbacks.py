"""The Tune callback that records every trial in MLflow, from the driver.

All writes happen on the driver: trials finishing at the same time never contend for a
``sqlite:///`` store. After a resume, the callback finds the child runs that already exist
(by trial id) instead of opening duplicates. Trial states come from ``records.TrialTracker``.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune

from records import schema
from records.schema import EPOCHS_RUN, PARENT, RESOURCES, ROLE, SEARCH, STATE, TRIAL_ID
from records.states import TrialTracker


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

    def __getstate__(self):  # Tune pickles callbacks with the experiment state; clients do not pickle
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = schema.client_for(self.uri)
        return self._client

    def setup(self, **info):
        parent = self.client.get_run(self.parent_run_id)
        # What every trial run shares with its parent, read once (these tags never change during a search).
        self.experiment_id = parent.info.experiment_id
        self.inherited_tags = {k: v for k, v in parent.data.tags.items()
                               if k.startswith("rs.") and k not in (ROLE, STATE, schema.BEST_TRIAL, schema.BEST_EPOCH)}
        for run in schema.child_runs(self.client, parent):  # after a resume: reuse, never duplicate
            tid = run.data.tags.get(TRIAL_ID)
            if tid:
                self.runs[tid] = run.info.run_id

    def _run_for(self, trial) -> str:
        rid = self.runs.get(trial.trial_id)
        if rid is None:
            run = self.client.create_run(
                self.experiment_id, run_name=f"{self.search_name}/{trial.trial_id}",
                tags={**self.inherited_tags, PARENT: self.parent_run_id, ROLE: "trial", SEARCH: self.search_name,
                      TRIAL_ID: trial.trial_id, STATE: "running", RESOURCES: requested_resources(trial)})
            rid = self.runs[trial.trial_id] = run.info.run_id
            config = {k: v for k, v in trial.config.items() if not k.startswith("rs_")}
            self.client.log_batch(rid, params=schema.as_params(config))
            self.client.log_dict(rid, config, "config.json")
        return rid

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.result(trial.trial_id, result)
        t = self.tracker.get(trial.trial_id)
        metrics = schema.as_metrics(result, t.epoch)
        if t.best is not None:  # the running best and its epoch, every epoch (a curve in the UI)
            ts = metrics[0].timestamp if metrics else 0
            metrics += [Metric(schema.best_key(self.tracker.metric), t.best, ts, t.epoch),
                        Metric(schema.best_key("epoch"), float(t.best_epoch), ts, t.epoch)]
        self.client.log_batch(self._run_for(trial), metrics=metrics)

    def _finish(self, trial, state, status: str) -> None:
        rid = self._run_for(trial)
        t = self.tracker.get(trial.trial_id)
        if t.at_best:
            self.client.log_batch(rid, metrics=[Metric(schema.at_best_key(k), v, 0, t.best_epoch)
                                                for k, v in t.at_best.items()])
        self.client.set_tag(rid, STATE, str(state))
        self.client.set_tag(rid, EPOCHS_RUN, str(t.epoch))
        self.client.set_terminated(rid, status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, self.tracker.finished(trial.trial_id), "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        error = "unknown error"
        if trial.error_file and Path(trial.error_file).is_file():
            error = Path(trial.error_file).read_text()[-4000:]
            self.client.log_text(self._run_for(trial), error, "error.txt")
        self._finish(trial, self.tracker.failed(trial.trial_id, error), "FAILED")
