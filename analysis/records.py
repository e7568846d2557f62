"""A search's MLflow records as DataFrames: one row per trial, or per-epoch histories.

Reads what ``search/tracking.py`` writes (a parent run tagged ``rs.role=search`` and one child
run per trial), through that module's Ray-free look-ups.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml
from mlflow.tracking import MlflowClient

from search.tracking import STATE, TRIAL_ID, StoreNotFound, child_runs, find_parent, tracking_uri
from search.tracking import client_for as _client_for

BEST_CHECKPOINT = "best_model/checkpoint.pt"
OUTCOMES = ("completed", "stopped", "failed", "running")

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # read at download time


class SearchNotFound(LookupError):
    """No search of that name in the tracking store; the message says where it looked."""


@dataclass(frozen=True)
class SearchInfo:
    """The parent run of a search: what was searched, for what, and where its records live."""

    name: str
    run_id: str
    experiment_id: str
    uri: str
    study: str
    family: str
    dataset: str
    objective: str
    mode: str
    sampler: str
    state: str
    best_trial: str | None
    best_value: float | None
    best_column: str  # per-trial best objective value, as logged by the tracking callback
    constraint: dict[str, Any] | None = None
    description: str = ""
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()

    @property
    def has_checkpoint(self) -> bool:
        return "best_model" in self.artifacts


def client_for(uri: str | None = None) -> MlflowClient:
    """A client for an existing store: a missing sqlite file is an error, never silently created."""
    try:
        return _client_for(uri, must_exist=True)
    except StoreNotFound as e:
        raise SearchNotFound(str(e)) from None


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def search_info(name: str, uri: str | None = None, client: MlflowClient | None = None) -> SearchInfo:
    """The search's parent run; raises ``SearchNotFound`` when there is none of that name."""
    client = client or client_for(uri)
    parent = find_parent(client, name)
    if parent is None:
        raise SearchNotFound(f"no search named '{name}' in MLflow at {tracking_uri(uri)} "
                             "(`search ls` lists the searches)")
    tags, params = parent.data.tags, parent.data.params
    artifacts = tuple(a.path for a in client.list_artifacts(parent.info.run_id))
    space, study = {}, {}
    with tempfile.TemporaryDirectory() as d:
        if "search_space.json" in artifacts:
            space = json.loads(Path(client.download_artifacts(parent.info.run_id, "search_space.json", d)).read_text())
        study_files = [a.path for a in client.list_artifacts(parent.info.run_id, "study")] if "study" in artifacts else []
        if study_files:
            study = yaml.safe_load(Path(client.download_artifacts(parent.info.run_id, study_files[0], d)).read_text())
    study = study if isinstance(study, dict) else {}
    objective = params.get("objective", "val_acc")
    constraint = (study.get("objective") or {}).get("constraint") if isinstance(study.get("objective"), dict) else None
    # Under a constraint the trials report the penalized score as ``objective`` (trainables/objective.py),
    # so the tracking callback logs ``best_objective``, not ``best_<metric>``.
    best_column = "best_objective" if constraint or "best_objective" in parent.data.metrics else f"best_{objective}"
    return SearchInfo(
        name=name, run_id=parent.info.run_id, experiment_id=parent.info.experiment_id, uri=tracking_uri(uri),
        study=tags.get("rs.study", ""), family=tags.get("rs.family", params.get("family", "")),
        dataset=tags.get("rs.dataset", params.get("dataset", "")), objective=objective,
        mode=params.get("mode", "max"), sampler=tags.get("rs.sampler", params.get("sampler", "")),
        state=tags.get(STATE, parent.info.status.lower()), best_trial=tags.get("rs.best_trial"),
        best_value=_float(parent.data.metrics.get(best_column)), best_column=best_column, constraint=constraint,
        description=str(study.get("description", "") or ""), space=space,
        fixed={k.removeprefix("fixed."): v for k, v in params.items() if k.startswith("fixed.")},
        artifacts=artifacts)


# ------------------------------------------------------------------ typing parameters back
def _param_text(value: Any) -> str:
    """How the tracking callback writes a parameter (``search.tracking._params``)."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def typed_param(text: str | None, spec: dict[str, Any]) -> Any:
    """MLflow keeps params as text: give a searched value back the type its search space gave it."""
    if text is None:
        return None
    kind = spec.get("type")
    if kind in ("choice", "grid"):
        for value in spec.get("values") or []:
            if _param_text(value) == text:
                return value
        return text
    try:
        return int(float(text)) if kind == "int" else float(text)
    except ValueError:
        return text


def outcome(state: str) -> str:
    """``completed`` / ``stopped`` / ``failed`` / ``running`` from an ``rs.state`` tag."""
    state = (state or "").strip()
    for name in OUTCOMES:
        if state.startswith(name):
            return name
    return state or "unknown"


def _metric_order(name: str) -> tuple:
    core = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "clean_acc"]
    return (core.index(name), "") if name in core else (len(core), name)


def trials(name: str, uri: str | None = None, *, info: SearchInfo | None = None,
           client: MlflowClient | None = None) -> pd.DataFrame:
    """One row per trial, best first: searched params (typed), best objective, outcome, final metrics.

    Columns: ``trial``, each searched parameter (None where a conditional parameter did not
    apply), ``best_<objective>``, ``state`` (the raw tag), ``outcome``, ``epochs``, then every
    metric's last logged value (``val_acc`` is the *final* epoch's value, ``test_*`` exist
    only for trials that reached their last epoch; a metric named like a searched parameter,
    such as the scheduled ``lr``, becomes ``last_lr``), then ``run_id``. ``df.attrs`` carries
    the objective, mode, searched parameter names and the best-value column.
    """
    client = client or client_for(uri)
    info = info or search_info(name, uri, client)
    best_col = info.best_column
    rows, metric_names = [], set()
    parent = client.get_run(info.run_id)
    for run in child_runs(client, parent):
        tags, metrics = run.data.tags, run.data.metrics
        row: dict[str, Any] = {"trial": tags.get(TRIAL_ID, run.info.run_id)}
        row.update({p: typed_param(run.data.params.get(p), spec) for p, spec in info.space.items()})
        row[best_col] = metrics.get(best_col, float("nan"))
        row["state"] = tags.get(STATE, "")
        row["outcome"] = outcome(row["state"])
        row["epochs"] = int(_float(tags.get("rs.epochs_run")) or 0)
        finals = {(f"last_{k}" if k in row else k): v for k, v in metrics.items() if not k.startswith("best_")}
        metric_names.update(finals)
        row.update(finals)
        row["run_id"] = run.info.run_id
        rows.append(row)
    head = ["trial", *info.space, best_col, "state", "outcome", "epochs"]
    columns = head + sorted(metric_names - set(head), key=_metric_order) + ["run_id"]
    table = pd.DataFrame(rows, columns=columns)
    for p, spec in info.space.items():
        if spec.get("type") in ("uniform", "loguniform", "int"):
            table[p] = pd.to_numeric(table[p], errors="coerce")
    if len(table):
        table = table.sort_values([best_col, "trial"], ascending=[info.mode == "min", True],
                                  na_position="last").reset_index(drop=True)
    table.attrs.update(objective=info.objective, mode=info.mode, best_column=best_col, params=list(info.space),
                       search=info.name)
    return table


def histories(name: str, uri: str | None = None, metrics: Iterable[str] = ("val_acc", "val_loss"), *,
              trial_ids: Iterable[str] | None = None, info: SearchInfo | None = None,
              client: MlflowClient | None = None) -> pd.DataFrame:
    """Per-epoch values in long format: ``trial, epoch, metric, value`` (only the metrics asked).

    A trial restored from a checkpoint after a failure logs the redone epochs again: the
    last value logged for an epoch wins.
    """
    client = client or client_for(uri)
    info = info or search_info(name, uri, client)
    wanted = set(trial_ids) if trial_ids is not None else None
    rows = []
    for run in child_runs(client, client.get_run(info.run_id)):
        trial = run.data.tags.get(TRIAL_ID, run.info.run_id)
        if wanted is not None and trial not in wanted:
            continue
        for metric in metrics:
            if metric not in run.data.metrics:
                continue
            for m in client.get_metric_history(run.info.run_id, metric):
                rows.append((trial, int(m.step), metric, float(m.value), m.timestamp))
    frame = pd.DataFrame(rows, columns=["trial", "epoch", "metric", "value", "timestamp"])
    frame = (frame.sort_values(["trial", "metric", "epoch", "timestamp"])
             .drop_duplicates(["trial", "metric", "epoch"], keep="last"))
    return frame.drop(columns="timestamp").reset_index(drop=True)


def download_checkpoint(info: SearchInfo, dst: str | Path, client: MlflowClient | None = None) -> Path | None:
    """The best model's weights (``best_model/checkpoint.pt`` on the parent run), or None if absent."""
    if not info.has_checkpoint:
        return None
    client = client or client_for(info.uri)
    names = [a.path for a in client.list_artifacts(info.run_id, "best_model")]
    if BEST_CHECKPOINT not in names:
        return None
    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(info.run_id, BEST_CHECKPOINT, str(dst)))

