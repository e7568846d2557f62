"""The writes of a search's records: MLflow's client, the parent run with its provenance, params and metrics
as MLflow takes them, the best model and the Pareto tags. Only writers import this (``search run``,
``resume``, ``reproduce``, ``report``); the read commands read through ``records.reader`` without MLflow.
"""

from __future__ import annotations

import logging
import os  # noqa: I001 - the environment is set before mlflow is imported
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from .schema import (
    BEST_EPOCH,
    BEST_MODEL,
    BEST_TRIAL,
    DESCRIPTION,
    NON_METRICS,
    PARETO,
    REPORT,
    ROLE,
    SEARCH,
    STATE,
    param_text,
    searched_metric,
    sqlite_file,
    tracking_uri,
)
from .states import SearchState


def client_for(uri: str | None = None, *, must_exist: bool = False) -> MlflowClient:
    """An MLflow client; ``must_exist`` refuses a missing sqlite file instead of creating an empty store."""
    uri = tracking_uri(uri)
    if must_exist:
        sqlite_file(uri)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # sqlite migrations are noisy on first use
    return MlflowClient(tracking_uri=uri)


GIT_COMMIT_ENV = "RS_GIT_COMMIT"  # set by the submitting side: a job's copy of the project may have no .git


def git_commit() -> str:
    """The commit of the code that runs: $RS_GIT_COMMIT where the submitter set it (scripts/submit.sh,
    docs/cluster.md), else the checkout this package lives in, else ``unknown``."""
    if os.environ.get(GIT_COMMIT_ENV, "").strip():
        return os.environ[GIT_COMMIT_ENV].strip()
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
    return [Param(k, param_text(v)[:6000]) for k, v in d.items()]


def as_metrics(result: dict[str, Any], step: int) -> list[Metric]:
    ts = int(time.time() * 1000)
    return [Metric(k, float(v), ts, step) for k, v in result.items()
            if k not in NON_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)]


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # the UI's "Model training" view


def experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, tags=dict([EXPERIMENT_KIND]))
    if EXPERIMENT_KIND[0] not in exp.tags:  # MLflow 3 otherwise opens an untagged experiment in its GenAI view
        client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    return exp.experiment_id


def start_parent(client: MlflowClient, study, search_name: str, study_path: Path, *, sampler: str,
                 data_source: str | None = None, extra_tags: dict[str, str] | None = None) -> str:
    """Create the search's parent run with the study file, its space, provenance and versions."""
    exp = experiment_id(client, study.name)
    tags = {ROLE: "search", SEARCH: search_name, "rs.study": study.name, "rs.family": study.family,
            "rs.dataset": study.dataset, "rs.git_commit": git_commit(), "rs.sampler": sampler,
            STATE: SearchState.RUNNING.value, **(extra_tags or {})}
    if study.description.strip():
        tags[DESCRIPTION] = study.description.strip()
    if data_source:
        tags["rs.data_source"] = data_source
    run = client.create_run(exp, run_name=search_name, tags=tags)
    rid = run.info.run_id
    fields = {"family": study.family, "dataset": study.dataset, "num_samples": study.budget.num_samples,
              "max_epochs": study.budget.max_epochs, "scheduler": study.budget.scheduler,
              "objective": searched_metric(study), "target_metric": study.objective.metric,
              "mode": study.objective.mode, "sampler": sampler, **{f"fixed.{k}": v for k, v in study.fixed.items()}}
    client.log_batch(rid, params=as_params(fields),
                     tags=[RunTag(f"version.{k}", v) for k, v in package_versions().items()])
    client.log_artifact(rid, str(study_path), "study")
    client.log_dict(rid, {k: v.model_dump(exclude_none=True) for k, v in study.search.items()}, "search_space.json")
    return rid


def log_best_model(client: MlflowClient, parent_run_id: str, child_run_id: str | None, folder: str | Path,
                   trial_id: str, epoch: int) -> None:
    """The best trial's weights at its best epoch, on the parent run and on the trial's run."""
    client.set_tag(parent_run_id, BEST_TRIAL, trial_id)
    client.set_tag(parent_run_id, BEST_EPOCH, str(epoch))
    for rid in [parent_run_id] + ([child_run_id] if child_run_id else []):
        client.log_artifacts(rid, str(folder), BEST_MODEL)


def mark_pareto(client: MlflowClient, parent_run_id: str, runs: dict[str, str], front: list[str]) -> None:
    """Tag the trials on the Pareto front (``rs.pareto = true``) and list them on the parent.

    ``runs`` maps trial id -> run id.
    """
    on = set(front)
    for tid, rid in runs.items():
        client.set_tag(rid, PARETO, str(tid in on).lower())
    client.set_tag(parent_run_id, "rs.pareto_front", ",".join(sorted(on)))


def log_report(info, folder: str | Path, client: MlflowClient | None = None) -> str:
    """Log a written report folder as the ``report/`` artifacts of the search's parent run; returns their URI."""
    client = client or client_for(info.uri)
    client.log_artifacts(info.run_id, str(folder), REPORT)
    return f"{client.get_run(info.run_id).info.artifact_uri}/{REPORT}"
