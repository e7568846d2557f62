"""The MLflow schema of a search: tag names, the parent/child layout, provenance, and the writes.

One parent run per search (tag ``rs.role=search``), one child run per trial (``rs.role=trial``,
``mlflow.parentRunId`` = the parent, ``rs.trial_id`` = Ray's trial id). A reproduction is a parent
run tagged ``rs.role=reproduce`` with one child per seed. Ray-free: analysis and the read-only
commands use it without starting Ray.
"""

from __future__ import annotations

import json
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

from .states import SearchState

PARETO = "rs.pareto"
ROLE, SEARCH, TRIAL_ID, STATE = "rs.role", "rs.search", "rs.trial_id", "rs.state"
PARENT = "mlflow.parentRunId"
BEST_TRIAL, BEST_EPOCH, EPOCHS_RUN = "rs.best_trial", "rs.best_epoch", "rs.epochs_run"
SOURCE_SEARCH = "rs.source_search"  # on a reproduction: the search it reproduces
RESOURCES = "rs.resources"  # on a trial: what Ray reserved for it ("cpu=1,gpu=0.25")
SHOWN = "rs.shown_metrics"  # on a search: JSON list of the family's metrics its trial table shows (Family.shown_metrics)
BEST_MODEL = "best_model"  # artifact folder: the best trial's weights at its best epoch
BEST_CHECKPOINT = f"{BEST_MODEL}/checkpoint.pt"
BEST_YAML = "best.yaml"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
NON_METRICS = {"epoch", "training_iteration", "done", "timestamp", "time_this_iter_s", "time_total_s", "pid",
               "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint"}


def best_key(metric: str) -> str:
    """The per-epoch running best of ``metric`` on a trial run, and the best value on the parent."""
    return f"best_{metric}"


OBJECTIVE = "objective"  # the penalized score a constrained search ranks on (trainables/objective.py reports it)
REPORT = "report"  # the parent run's artifact folder holding ``search report``'s output


def at_best_key(metric: str) -> str:
    """``metric``'s value at the trial's best epoch (for Pareto fronts and constraints)."""
    return f"at_best.{metric}"


def tracking_uri(explicit: str | None = None) -> str:
    return with_db_driver(explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


def with_db_driver(uri: str) -> str:
    """``postgresql://`` as users write it, with the driver that is installed (SQLAlchemy needs one)."""
    if not uri.startswith(("postgresql://", "postgres://")):
        return uri
    from importlib.util import find_spec

    rest = uri.split("://", 1)[1]
    for module, dialect in (("psycopg2", "postgresql+psycopg2"), ("psycopg", "postgresql+psycopg")):
        if find_spec(module):
            return f"{dialect}://{rest}"
    raise StoreNotFound(f"{uri.split('@')[-1]}: no PostgreSQL driver is installed; "
                        "pip install 'robust-search[cluster]' (psycopg2-binary)")


class StoreNotFound(FileNotFoundError):
    """A read command pointed at a sqlite store that does not exist (MLflow would create it empty)."""


def client_for(uri: str | None = None, *, must_exist: bool = False) -> MlflowClient:
    """An MLflow client; ``must_exist`` refuses a missing sqlite file instead of creating an empty store."""
    uri = tracking_uri(uri)
    if must_exist and uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if str(path) != ":memory:" and not path.is_file():
            raise StoreNotFound(f"no MLflow store at {uri} ({path.resolve()} does not exist); run from the "
                                "directory of the search or pass --tracking-uri")
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


def param_text(value: Any) -> str:
    """How a parameter is stored (MLflow keeps text); ``typed_param`` reads it back."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def as_params(d: dict[str, Any]) -> list[Param]:
    return [Param(k, param_text(v)[:6000]) for k, v in d.items()]


def as_metrics(result: dict[str, Any], step: int) -> list[Metric]:
    ts = int(time.time() * 1000)
    return [Metric(k, float(v), ts, step) for k, v in result.items()
            if k not in NON_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)]


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # the UI's "Model training" view
# MLflow 3.17's UI opens every page in its GenAI view unless the link says otherwise (the experiment tag
# above only names the kind; a fresh browser still starts in "GenAI", breadcrumb "Evaluations").
UI_VIEW = "workflowType=machine_learning"
DESCRIPTION = "mlflow.note.content"  # the run's description in the UI


def ui_url(base: str, experiment: str, run_id: str | None = None) -> str:
    """The UI page of an experiment's runs (or of one run) in the classic training view."""
    page = f"/runs/{run_id}" if run_id else "/runs"
    return f"{base.rstrip('/')}/#/experiments/{experiment}{page}?{UI_VIEW}"


def experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, tags=dict([EXPERIMENT_KIND]))
    if EXPERIMENT_KIND[0] not in exp.tags:  # MLflow 3 otherwise opens an untagged experiment in its GenAI view
        client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    return exp.experiment_id


def searched_metric(study) -> str:
    """The value the sampler and ASHA see: ``objective`` under a constraint (trainables/objective.py)."""
    return OBJECTIVE if study.objective.constraint else study.objective.metric


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


def _parents(client: MlflowClient, filter_string: str, max_results: int = 1000) -> list:
    exps = [e.experiment_id for e in client.search_experiments()]
    if not exps:
        return []
    return client.search_runs(exps, filter_string=filter_string, order_by=["attributes.start_time DESC"],
                              max_results=max_results)


def find_parent(client: MlflowClient, search_name: str, role: str = "search"):
    """The newest parent run of that name and role (``search`` or ``reproduce``), or None."""
    if "'" in search_name:  # cannot be a search name, and would break the filter string
        return None
    runs = _parents(client, f"tags.`{ROLE}` = '{role}' and tags.`{SEARCH}` = '{search_name}'", 1)
    return runs[0] if runs else None


def parents_named(client: MlflowClient, search_name: str) -> list:
    """Every (not deleted) search parent run of that name, newest first."""
    if "'" in search_name:
        return []
    return _parents(client, f"tags.`{ROLE}` = 'search' and tags.`{SEARCH}` = '{search_name}'")


def search_parents(client: MlflowClient) -> list:
    return _parents(client, f"tags.`{ROLE}` = 'search'")


def reproductions(client: MlflowClient, search_name: str) -> list:
    """Every ``search reproduce`` run made from this search's best configuration, newest first."""
    if "'" in search_name:
        return []
    return _parents(client, f"tags.`{ROLE}` = 'reproduce' and tags.`{SOURCE_SEARCH}` = '{search_name}'")


def child_runs(client: MlflowClient, parent) -> list:
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}'",
                              max_results=10000)


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
