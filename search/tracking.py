"""MLflow records: one parent run per search, one nested child run per trial.

This module is Ray-free (analysis/ and the read-only commands use it); the Tune callback
that writes the trial runs is in ``search.callbacks``. Children are nested in the UI through
the ``mlflow.parentRunId`` tag.
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

ROLE, SEARCH, TRIAL_ID, STATE = "rs.role", "rs.search", "rs.trial_id", "rs.state"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
NON_METRICS = {"epoch", "training_iteration", "done", "timestamp", "time_this_iter_s", "time_total_s", "pid",
               "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint"}


def tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class StoreNotFound(FileNotFoundError):
    """A read command pointed at a sqlite store that does not exist (MLflow would create it empty)."""


def client_for(uri: str | None = None, *, must_exist: bool = False) -> MlflowClient:
    """An MLflow client; ``must_exist`` refuses a missing sqlite file instead of creating an empty store."""
    import logging

    uri = tracking_uri(uri)
    if must_exist and uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if str(path) != ":memory:" and not path.is_file():
            raise StoreNotFound(f"no MLflow store at {uri} ({path.resolve()} does not exist); run from the "
                                "directory of the search or pass --tracking-uri")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # sqlite migrations are noisy on first use
    return MlflowClient(tracking_uri=uri)


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


def as_params(d: dict[str, Any]) -> list[Param]:
    def text(v):
        return json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)

    return [Param(k, text(v)[:6000]) for k, v in d.items()]


def as_metrics(result: dict[str, Any], step: int) -> list[Metric]:
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
    fields = {"family": study.family, "dataset": study.dataset, "num_samples": study.budget.num_samples,
              "max_epochs": study.budget.max_epochs,
              # the searched value: a constrained objective is reported as "objective" (see trainables/objective.py)
              "objective": "objective" if study.objective.constraint else study.objective.metric,
              "target_metric": study.objective.metric,
              "mode": study.objective.mode, "sampler": sampler, **{f"fixed.{k}": v for k, v in study.fixed.items()}}
    client.log_batch(rid, params=as_params(fields),
                     tags=[RunTag(f"version.{k}", v) for k, v in package_versions().items()])
    client.log_artifact(rid, str(study_path), "study")
    client.log_dict(rid, {k: v.model_dump(exclude_none=True) for k, v in study.search.items()}, "search_space.json")
    return rid


def find_parent(client: MlflowClient, search_name: str):
    if "'" in search_name:  # cannot be a search name, and would break the filter string
        return None
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


def mark_pareto(client: MlflowClient, parent_run_id: str, trial_ids: list[str]) -> None:
    """Tag the trials on the Pareto front (``rs.pareto = true``) and list them on the parent."""
    parent = client.get_run(parent_run_id)
    front = set(trial_ids)
    for run in child_runs(client, parent):
        client.set_tag(run.info.run_id, "rs.pareto", str(run.data.tags.get(TRIAL_ID) in front).lower())
    client.set_tag(parent_run_id, "rs.pareto_front", ",".join(sorted(front)))
