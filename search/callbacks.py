"""The Tune callback that records every trial in MLflow, from the driver.

All writes happen on the driver: trials finishing at the same time never contend for a
``sqlite:///`` store. After a resume, the callback finds the child runs that already exist
(by trial id) instead of opening duplicates.
"""

from __future__ import annotations

from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune

from .tracking import ROLE, SEARCH, STATE, TRIAL_ID, as_metrics, as_params, best_key, child_runs, client_for


class MlflowTrialLogger(tune.Callback):
    """Logs every trial (params, per-epoch metrics, final state) as a child of the search's run."""

    def __init__(self, uri: str, parent_run_id: str, search_name: str, max_epochs: int, metric: str, mode: str):
        self.uri, self.parent_run_id, self.search_name, self.max_epochs = uri, parent_run_id, search_name, max_epochs
        self.metric, self.mode = metric, mode
        self._client: MlflowClient | None = None
        self.runs: dict[str, str] = {}
        self.last_epoch: dict[str, int] = {}
        self.best: dict[str, float] = {}

    def __getstate__(self):  # Tune pickles callbacks with the experiment state; clients do not pickle
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = client_for(self.uri)
        return self._client

    def setup(self, **info):
        parent = self.client.get_run(self.parent_run_id)
        # What every trial run shares with its parent, read once (these tags never change during a search).
        self.experiment_id = parent.info.experiment_id
        self.inherited_tags = {k: v for k, v in parent.data.tags.items() if k.startswith("rs.") and k not in (ROLE, STATE)}
        for run in child_runs(self.client, parent):  # after a resume: reuse, never duplicate
            tid = run.data.tags.get(TRIAL_ID)
            if tid:
                self.runs[tid] = run.info.run_id

    def _run_for(self, trial) -> str:
        rid = self.runs.get(trial.trial_id)
        if rid is None:
            run = self.client.create_run(
                self.experiment_id, run_name=f"{self.search_name}/{trial.trial_id}",
                tags={**self.inherited_tags, "mlflow.parentRunId": self.parent_run_id, ROLE: "trial",
                      SEARCH: self.search_name, TRIAL_ID: trial.trial_id, STATE: "running"})
            rid = self.runs[trial.trial_id] = run.info.run_id
            config = {k: v for k, v in trial.config.items() if not k.startswith("rs_")}
            self.client.log_batch(rid, params=as_params(config))
            self.client.log_dict(rid, config, "config.json")
        return rid

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        self.last_epoch[trial.trial_id] = step
        metrics = as_metrics(result, step)
        value = result.get(self.metric)
        if isinstance(value, (int, float)):
            best = self.best.get(trial.trial_id)
            if best is None or (value > best if self.mode == "max" else value < best):
                self.best[trial.trial_id] = best = float(value)
            metrics.append(Metric(best_key(self.metric), best, metrics[0].timestamp if metrics else 0, step))
        self.client.log_batch(self._run_for(trial), metrics=metrics)

    def on_trial_complete(self, iteration, trials, trial, **info):
        epoch = self.last_epoch.get(trial.trial_id, 0)
        state = "completed" if epoch >= self.max_epochs else f"stopped early by ASHA at epoch {epoch}"
        rid = self._run_for(trial)
        self.client.set_tag(rid, STATE, state)
        self.client.set_tag(rid, "rs.epochs_run", str(epoch))
        self.client.set_terminated(rid, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        rid = self._run_for(trial)
        error = "unknown error"
        if trial.error_file and Path(trial.error_file).is_file():
            error = Path(trial.error_file).read_text()[-4000:]
            self.client.log_text(rid, error, "error.txt")
        last_line = error.strip().splitlines()[-1] if error.strip() else error
        self.client.set_tag(rid, STATE, f"failed: {last_line[:250]}")
        self.client.set_terminated(rid, "FAILED")
