"""MLflow records: one parent run per search, one nested child run per trial.

All writes happen on the driver, through a Tune callback: trials finishing at the same
time never contend for a ``sqlite:///`` store. Children are nested in the UI through the
``mlflow.parentRunId`` tag. After a resume, the callback finds the child runs that already
exist (by trial id) instead of opening duplicates.
"""

from __future__ import annotations

import json
import os  # noqa: I001 - the environment is set before mlflow is imported
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

ROLE, SEARCH, TRIAL_ID, STATE = "rs.role", "rs.search", "rs.trial_id", "rs.state"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
NON_METRICS = {"epoch", "training_iteration", "done", "timestamp", "time_this_iter_s", "time_total_s", "pid",
               "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint"}


def tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def client_for(uri: str | None = None) -> MlflowClient:
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)  # sqlite migrations are noisy on first use
    return MlflowClient(tracking_uri=tracking_uri(uri))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    names = ("torch", "torchvision", "ray", "optuna", "mlflow", "numpy", "pandas", "pydantic")
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "absent"
    return out


def _params(d: dict[str, Any]) -> list[Param]:
    def text(v):
        return json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)

    return [Param(k, text(v)[:6000]) for k, v in d.items()]


def _metrics(result: dict[str, Any], step: int) -> list[Metric]:
    ts = int(time.time() * 1000)
    return [Metric(k, float(v), ts, step) for k, v in result.items()
            if k not in NON_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)]


def experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp else client.create_experiment(name)


def start_parent(client: MlflowClient, study, search_name: str, study_path: Path, *, sampler: str,
                 data_source: str | None = None, extra_tags: dict[str, str] | None = None) -> str:
    """Create the search's parent run with the study file, its space, provenance and versions."""
    exp = experiment_id(client, study.name)
    tags = {ROLE: "search", SEARCH: search_name, "rs.study": study.name, "rs.family": study.family,
            "rs.dataset": study.dataset, "rs.git_commit": git_commit(), "rs.sampler": sampler,
            STATE: "running", **(extra_tags or {})}
    if data_source:
        tags["rs.data_source"] = data_source
    run = client.create_run(exp, run_name=search_name, tags=tags)
    rid = run.info.run_id
    params = {"family": study.family, "dataset": study.dataset, "num_samples": study.budget.num_samples,
              "max_epochs": study.budget.max_epochs, "objective": study.objective.metric,
              "mode": study.objective.mode, "sampler": sampler, **{f"fixed.{k}": v for k, v in study.fixed.items()}}
    client.log_batch(rid, params=_params(params),
                     tags=[RunTag(f"version.{k}", v) for k, v in package_versions().items()])
    client.log_artifact(rid, str(study_path), "study")
    client.log_dict(rid, {k: v.model_dump(exclude_none=True) for k, v in study.search.items()}, "search_space.json")
    return rid


def find_parent(client: MlflowClient, search_name: str):
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{ROLE}` = 'search' and tags.`{SEARCH}` = '{search_name}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def child_runs(client: MlflowClient, parent) -> list:
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                              max_results=10000)


def best_key(metric: str) -> str:
    return f"best_{metric}"


def log_best(client: MlflowClient, parent_run_id: str, best_result, metric: str, value: float) -> None:
    """Record the best trial on the parent run, with its weights as an artifact on both runs."""
    trial_id = Path(best_result.path).name if best_result.path else ""
    tid = best_result.metrics.get("trial_id", trial_id)
    client.set_tag(parent_run_id, "rs.best_trial", tid)
    client.log_metric(parent_run_id, best_key(metric), value)
    if best_result.checkpoint is None:
        return
    parent = client.get_run(parent_run_id)
    child = [r for r in child_runs(client, parent) if r.data.tags.get(TRIAL_ID) == tid]
    with best_result.checkpoint.as_directory() as d:
        for rid in [parent_run_id] + [r.info.run_id for r in child]:
            client.log_artifacts(rid, d, "best_model")


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
        for run in child_runs(self.client, parent):  # after a resume: reuse, never duplicate
            tid = run.data.tags.get(TRIAL_ID)
            if tid:
                self.runs[tid] = run.info.run_id

    def _run_for(self, trial) -> str:
        rid = self.runs.get(trial.trial_id)
        if rid is None:
            parent = self.client.get_run(self.parent_run_id)
            run = self.client.create_run(
                parent.info.experiment_id, run_name=f"{self.search_name}/{trial.trial_id}",
                tags={"mlflow.parentRunId": self.parent_run_id, ROLE: "trial", SEARCH: self.search_name,
                      TRIAL_ID: trial.trial_id, STATE: "running", **{k: v for k, v in parent.data.tags.items()
                                                                     if k.startswith("rs.") and k not in (ROLE, STATE)}})
            rid = self.runs[trial.trial_id] = run.info.run_id
            config = {k: v for k, v in trial.config.items() if not k.startswith("rs_")}
            self.client.log_batch(rid, params=_params(config))
            self.client.log_dict(rid, config, "config.json")
        return rid

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        self.last_epoch[trial.trial_id] = step
        metrics = _metrics(result, step)
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
