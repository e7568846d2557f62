"""The MLflow schema of a search: tag names, the parent/child layout, and the queries that find its runs.

One parent run per search (tag ``rs.role=search``), one child run per trial (``rs.role=trial``,
``mlflow.parentRunId`` = the parent, ``rs.trial_id`` = Ray's trial id). A reproduction is a parent
run tagged ``rs.role=reproduce`` with one child per seed. Ray-free: analysis and the read-only
commands use it without starting Ray, and without MLflow: the read queries below go through a
``records.reader.Reader``; the writes are ``records.writer``'s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .reader import ClientReader, Reader, as_reader
from .rest_reader import RestReader
from .sql_reader import SqlReader

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


def param_text(value: Any) -> str:
    """How a parameter is stored (MLflow keeps text); ``typed_param`` reads it back."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


# MLflow 3.17's UI opens every page in its GenAI view unless the link says otherwise (the experiment tag
# ``records.writer.EXPERIMENT_KIND`` only names the kind; a fresh browser still starts in "GenAI", breadcrumb "Evaluations").
UI_VIEW = "workflowType=machine_learning"
DESCRIPTION = "mlflow.note.content"  # the run's description in the UI


def ui_url(base: str, experiment: str, run_id: str | None = None) -> str:
    """The UI page of an experiment's runs (or of one run) in the classic training view."""
    page = f"/runs/{run_id}" if run_id else "/runs"
    return f"{base.rstrip('/')}/#/experiments/{experiment}{page}?{UI_VIEW}"


def searched_metric(study) -> str:
    """The value the sampler and ASHA see: ``objective`` under a constraint (trainables/objective.py)."""
    return OBJECTIVE if study.objective.constraint else study.objective.metric


def sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store (None for any other store); ``StoreNotFound`` where it does not exist."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return None
    path = Path(uri[len("sqlite:///"):])
    if not path.is_file():
        raise StoreNotFound(f"no MLflow store at {uri} ({path.resolve()} does not exist); run from the "
                            "directory of the search or pass --tracking-uri")
    return path


def reader_for(uri: str | None = None) -> Reader:
    """A reader of an existing store, MLflow's client only for the stores the direct readers do not know.

    A missing sqlite file is ``StoreNotFound`` (MLflow would create it empty); it is opened read-only.
    """
    uri = tracking_uri(uri)
    path = sqlite_file(uri)
    if path is not None:
        return SqlReader.sqlite(uri, path)
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("postgresql", "postgresql+psycopg2", "postgres"):
        return SqlReader.postgres(uri)
    if scheme in ("http", "https") and not os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        return RestReader(uri)
    return ClientReader.for_uri(uri)


def _parents(source: Reader | Any, tags: dict[str, str], max_results: int = 1000) -> list:
    return as_reader(source).runs_tagged(tags, max_results=max_results)


def find_parent(source: Reader | Any, search_name: str, role: str = "search"):
    """The newest parent run of that name and role (``search`` or ``reproduce``), or None.

    ``source``: a ``Reader``, or an ``MlflowClient`` (read through ``ClientReader``), as for every query here.
    """
    runs = _parents(source, {ROLE: role, SEARCH: search_name}, 1)
    return runs[0] if runs else None


def parents_named(source: Reader | Any, search_name: str) -> list:
    """Every (not deleted) search parent run of that name, newest first."""
    return _parents(source, {ROLE: "search", SEARCH: search_name})


def search_parents(source: Reader | Any) -> list:
    return _parents(source, {ROLE: "search"})


def reproductions(source: Reader | Any, search_name: str) -> list:
    """Every ``search reproduce`` run made from this search's best configuration, newest first."""
    return _parents(source, {ROLE: "reproduce", SOURCE_SEARCH: search_name})


def child_runs(source: Reader | Any, parent) -> list:
    return as_reader(source).runs_tagged({PARENT: parent.info.run_id}, experiment_id=parent.info.experiment_id)
