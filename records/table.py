"""The one trial table, the one best trial, the one ``best.yaml``: everything read back from MLflow.

``trials()`` is the only reader of trial runs; ``search run``, ``search show``, ``search export``
and the report all go through it, so they cannot disagree.

The best-trial rule (``rank``): trials that hold a score (completed, stopped early, ended by the
time budget) come before those that do not (diverged, failed, running); among them the best value
of the objective wins (max or min), then the trial whose best epoch came *earlier*, then the smaller
trial id (Ray numbers trials in creation order). ``best_row`` is the first row of that order.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

import trainables.core.metric_names as names

from . import schema
from .reader import Reader, as_reader
from .schema import PARETO, STATE, TRIAL_ID, StoreNotFound
from .states import OUTCOMES, RANKABLE, Outcome, outcome

FEASIBLE = "feasible"  # column of a constrained search: the constraint held at the trial's best epoch


class RecordError(LookupError):
    """The records cannot answer (exit code 2 in the CLI); the message says why."""


class SearchNotFound(RecordError):
    """No search of that name in the tracking store; the message says where it looked."""


class NoScore(RecordError):
    """A search in which no trial holds a score: there is no best trial to export."""


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
    objective: str  # the searched metric (``objective`` under a constraint)
    target: str  # the metric the study names (``pgd_acc_eps0.1``, ``val_acc``)
    mode: str
    sampler: str
    state: str
    max_epochs: int
    scheduler: str
    best_trial: str | None
    best_epoch: int | None
    best_value: float | None
    best_column: str  # per-trial best objective value, as logged by the tracking callback
    constraint: dict[str, Any] | None = None
    description: str = ""
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    study_doc: dict[str, Any] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()
    shown_metrics: tuple[str, ...] = ()  # the family's columns beside the objective (schema.SHOWN)

    @property
    def has_checkpoint(self) -> bool:
        return schema.BEST_MODEL in self.artifacts

    @property
    def shown_column(self) -> str:
        """The column a person reads: the study's metric at each trial's best epoch (``best_<target>``); under a
        constraint that is not the penalized ``best_objective`` the search ranks on."""
        return schema.best_key(self.target)


def reader_for(uri: str | None = None) -> Reader:
    """A reader of an existing store: a missing sqlite file is an error, never silently created."""
    try:
        return schema.reader_for(uri)
    except StoreNotFound as e:
        raise SearchNotFound(str(e)) from None


def _reader(client, uri: str | None) -> Reader:
    """What the functions below read through: the reader or ``MlflowClient`` a caller passes, else one for ``uri``."""
    return as_reader(client) if client is not None else reader_for(uri)


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def search_info(name: str, uri: str | None = None, client: Reader | Any = None) -> SearchInfo:
    """The search's parent run; raises ``SearchNotFound`` when there is none of that name."""
    reader = _reader(client, uri)
    parent = schema.find_parent(reader, name)
    if parent is None:
        raise SearchNotFound(f"no search named '{name}' in MLflow at {schema.tracking_uri(uri)} "
                             "(`search ls` lists the searches)")
    tags, params = parent.data.tags, parent.data.params
    artifacts = tuple(reader.list_artifacts(parent.info.run_id))
    space, study = {}, {}
    with tempfile.TemporaryDirectory() as d:
        if "search_space.json" in artifacts:
            space = json.loads(Path(reader.download_artifact(parent.info.run_id, "search_space.json", d)).read_text())
        study_files = reader.list_artifacts(parent.info.run_id, "study") if "study" in artifacts else []
        if study_files:
            study = yaml.safe_load(Path(reader.download_artifact(parent.info.run_id, study_files[0], d)).read_text())
    study = study if isinstance(study, dict) else {}
    objective = params.get("objective", names.DEFAULT_OBJECTIVE)
    constraint = (study.get("objective") or {}).get("constraint") if isinstance(study.get("objective"), dict) else None
    # Under a constraint the trials report the penalized score as ``objective`` (trainables/objective.py),
    # so the tracking callback logs ``best_objective``, not ``best_<metric>``.
    best_column = schema.best_key("objective") if constraint or "best_objective" in parent.data.metrics \
        else schema.best_key(objective)
    budget = study.get("budget") if isinstance(study.get("budget"), dict) else {}
    best_epoch = _float(tags.get(schema.BEST_EPOCH))
    return SearchInfo(
        name=name, run_id=parent.info.run_id, experiment_id=parent.info.experiment_id, uri=schema.tracking_uri(uri),
        study=tags.get("rs.study", ""), family=tags.get("rs.family", params.get("family", "")),
        dataset=tags.get("rs.dataset", params.get("dataset", "")), objective=objective,
        target=params.get("target_metric", objective), mode=params.get("mode", "max"),
        sampler=tags.get("rs.sampler", params.get("sampler", "")),
        state=tags.get(STATE, parent.info.status.lower()),
        max_epochs=int(_float(params.get("max_epochs")) or budget.get("max_epochs") or 0),
        scheduler=params.get("scheduler", budget.get("scheduler", "asha")),
        best_trial=tags.get(schema.BEST_TRIAL), best_epoch=int(best_epoch) if best_epoch is not None else None,
        best_value=_float(parent.data.metrics.get(best_column)), best_column=best_column, constraint=constraint,
        description=str(study.get("description", "") or ""), space=space,
        fixed={k.removeprefix("fixed."): v for k, v in params.items() if k.startswith("fixed.")},
        study_doc=study, artifacts=artifacts, shown_metrics=tuple(json.loads(tags.get(schema.SHOWN, "[]"))))


# ------------------------------------------------------------------ typing parameters back
def typed_param(text: str | None, spec: dict[str, Any]) -> Any:
    """MLflow keeps params as text: give a searched value back the type its search space gave it."""
    if text is None:
        return None
    kind = spec.get("type")
    if kind in ("choice", "grid"):
        for value in spec.get("values") or []:
            if schema.param_text(value) == text:
                return value
        return text
    try:
        return int(float(text)) if kind == "int" else float(text)
    except ValueError:
        return text


def _metric_order(name: str) -> tuple:
    core = [names.TRAIN_LOSS, names.TRAIN_ACC, names.VAL_LOSS, names.VAL_NLL, names.VAL_ACC, names.TEST_LOSS,
            names.TEST_ACC, names.CLEAN_ACC]
    return (core.index(name), "") if name in core else (len(core), name)


def rank(table: pd.DataFrame, best_col: str, mode: str) -> pd.DataFrame:
    """Sort trials by the one best-trial rule (see the module docstring); the best is the first row."""
    if table.empty:
        return table
    key = pd.DataFrame({
        "unranked": ~table["outcome"].isin(RANKABLE) | table[best_col].isna(),
        "value": pd.to_numeric(table[best_col], errors="coerce") * (-1.0 if mode == "max" else 1.0),
        "best_epoch": pd.to_numeric(table["best_epoch"], errors="coerce"),
        "trial": table["trial"].astype(str),
    })
    order = key.sort_values(["unranked", "value", "best_epoch", "trial"], na_position="last", kind="stable").index
    return table.loc[order].reset_index(drop=True)


def trials(name: str, uri: str | None = None, *, info: SearchInfo | None = None,
           client: Reader | Any = None) -> pd.DataFrame:
    """One row per trial, best first (``rank``): searched params (typed), best objective, state, final metrics.

    Columns: ``trial``, each searched parameter (None where a conditional parameter did not
    apply), ``best_<objective>``, ``best_epoch`` (the epoch of that value, whose weights are
    kept), ``epochs`` (epochs run), ``state`` (the tag), ``outcome`` (its kind), then every
    metric's last logged value (``val_acc`` is the *final* epoch's value, ``test_*`` exist only
    for trials that reached their last epoch; a metric named like a searched parameter, such as
    the scheduled ``lr``, becomes ``last_lr``), then ``run_id``. ``df.attrs`` carries the
    objective, mode, searched parameter names, the best-value column and the parent run's ids.
    """
    reader = _reader(client, uri)
    info = info or search_info(name, uri, reader)
    best_col = info.best_column
    rows, metric_names = [], set()
    parent = reader.get_run(info.run_id)
    for run in schema.child_runs(reader, parent):
        tags, metrics = run.data.tags, run.data.metrics
        row: dict[str, Any] = {"trial": tags.get(TRIAL_ID, run.info.run_id)}
        row.update({p: typed_param(run.data.params.get(p), spec) for p, spec in info.space.items()})
        row[best_col] = metrics.get(best_col, float("nan"))
        best_epoch = metrics.get(schema.best_key("epoch"))
        row["best_epoch"] = int(best_epoch) if best_epoch is not None and not math.isnan(best_epoch) else None
        row["epochs"] = int(_float(tags.get(schema.EPOCHS_RUN)) or 0)
        row["state"] = tags.get(STATE, "")
        row["outcome"] = outcome(row["state"])
        if PARETO in tags:  # tagged by a search with ``objective.pareto_with``
            row["pareto"] = tags[PARETO] == "true"
        finals = {(f"last_{k}" if k in row else k): v for k, v in metrics.items()
                  if not k.startswith("best_") and not k.startswith("at_best.")}
        finals.update({k: v for k, v in metrics.items() if k.startswith("at_best.")})
        metric_names.update(finals)
        row.update(finals)
        row["run_id"] = run.info.run_id
        rows.append(row)
    head = ["trial", *info.space, best_col, "best_epoch", "epochs", "state", "outcome"]
    head += ["pareto"] if any("pareto" in r for r in rows) else []
    columns = head + sorted(metric_names - set(head), key=_metric_order) + ["run_id"]
    table = pd.DataFrame(rows, columns=columns)
    for p, spec in info.space.items():
        if spec.get("type") in ("uniform", "loguniform", "int"):
            table[p] = pd.to_numeric(table[p], errors="coerce")
    table["best_epoch"] = table["best_epoch"].astype("Int64")
    if info.shown_column != best_col:  # a constraint: the metric at the best epoch, and whether it held there
        at_best = schema.at_best_key(info.target)
        shown = table[at_best] if at_best in table else pd.Series(float("nan"), index=table.index)
        table.insert(table.columns.get_loc(best_col) + 1, info.shown_column, shown)
        # the penalized score equals the metric exactly where the constraint holds (trainables/objective.py)
        feasible = (table[best_col] == shown).where(shown.notna() & table[best_col].notna())
        table.insert(table.columns.get_loc(info.shown_column) + 1, FEASIBLE, feasible.astype("boolean"))
    table = rank(table, best_col, info.mode)
    table.attrs.update(shown_metrics=list(info.shown_metrics))
    table.attrs.update(objective=info.objective, target=info.target, mode=info.mode, best_column=best_col,
                       shown_column=info.shown_column, params=list(info.space), search=info.name,
                       max_epochs=info.max_epochs, parent_run_id=info.run_id, experiment_id=info.experiment_id)
    return table


def best_row(table: pd.DataFrame) -> pd.Series | None:
    """The best trial (first row under ``rank``), or None when no trial holds a score."""
    if table.empty:
        return None
    first = table.iloc[0]
    if first["outcome"] not in RANKABLE or pd.isna(first[table.attrs["best_column"]]):
        return None
    return first


def display(table: pd.DataFrame, top: int | None = None, extra: Iterable[str] = ()) -> str:
    """The trial table as ``search run`` and ``search show`` print it (the same function for both); ``extra``:
    more metric columns (final epoch) after the state, such as the family's cross-domain accuracies."""
    shown_col, metric = table.attrs.get("shown_column", table.attrs["best_column"]), table.attrs["target"]
    cols = ["trial", *table.attrs["params"], shown_col] + ([FEASIBLE] if FEASIBLE in table else [])
    cols += ["best_epoch", "epochs", "state"] + (["pareto"] if "pareto" in table else [])
    cols += [c for c in extra if c in table and c not in cols]
    shown = table[cols].rename(columns={shown_col: metric})
    shown["best_epoch"] = shown["best_epoch"].astype("string").fillna("-")  # pandas prints <NA> otherwise
    if top is not None:
        shown = shown.head(top)
    if shown.empty:
        return "(no trials recorded)"
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")


def histories(name: str, uri: str | None = None, metrics: Iterable[str] = (names.VAL_ACC, names.VAL_LOSS), *,
              trial_ids: Iterable[str] | None = None, info: SearchInfo | None = None,
              client: Reader | Any = None) -> pd.DataFrame:
    """Per-epoch values in long format: ``trial, epoch, metric, value`` (only the metrics asked).

    A trial restored from a checkpoint after a failure logs the redone epochs again: the
    last value logged for an epoch wins.
    """
    reader = _reader(client, uri)
    info = info or search_info(name, uri, reader)
    wanted = set(trial_ids) if trial_ids is not None else None
    rows = []
    for run in schema.child_runs(reader, reader.get_run(info.run_id)):
        trial = run.data.tags.get(TRIAL_ID, run.info.run_id)
        if wanted is not None and trial not in wanted:
            continue
        for metric in metrics:
            if metric not in run.data.metrics:
                continue
            for m in reader.metric_history(run.info.run_id, metric):
                rows.append((trial, int(m.step), metric, float(m.value), m.timestamp))
    frame = pd.DataFrame(rows, columns=["trial", "epoch", "metric", "value", "timestamp"])
    frame = (frame.sort_values(["trial", "metric", "epoch", "timestamp"])
             .drop_duplicates(["trial", "metric", "epoch"], keep="last"))
    return frame.drop(columns="timestamp").reset_index(drop=True)


def at_common_epoch(table: pd.DataFrame, history: pd.DataFrame, metric: str) -> tuple[int | None, pd.Series]:
    """Each trial's ``metric`` at the last epoch every scored trial reached, and that epoch.

    Trials that diverged or failed are left out of the common epoch (and get NaN), so one
    broken trial does not pull every arm back to epoch 0.
    """
    scored = table[table["outcome"].isin(RANKABLE) & (table["epochs"] > 0)]
    if scored.empty or history.empty:
        return None, pd.Series(float("nan"), index=table.index)
    common = int(scored["epochs"].min())
    h = history[(history["metric"] == metric) & (history["epoch"] == common)].set_index("trial")["value"]
    values = table["trial"].map(h).where(table["outcome"].isin(RANKABLE))
    return common, values.astype(float)


# ------------------------------------------------------------------ searches, checkpoints, best.yaml
def list_searches(uri: str | None = None) -> pd.DataFrame:
    """One row per search: its state, trial counts per outcome, objective and best value."""
    reader = reader_for(uri)
    rows = []
    for run in schema.search_parents(reader):
        tags, metric = run.data.tags, run.data.params.get("objective", "")
        children = schema.child_runs(reader, run)
        kinds = [outcome(c.data.tags.get(STATE, "")) for c in children]
        best = run.data.metrics.get(schema.best_key(metric)) if metric else None
        if best is None and metric:  # still running (or stopped): the best of the trials that ended so far
            best = best_so_far(children, kinds, schema.best_key(metric), run.data.params.get("mode", "max"))
        rows.append({
            "search": tags.get(schema.SEARCH, run.info.run_name),
            "study": tags.get("rs.study", ""),
            "status": tags.get(STATE, run.info.status.lower()),
            "trials": len(kinds),
            **{k: sum(x == k for x in kinds) for k in OUTCOMES if k != Outcome.RUNNING},
            "objective": metric,
            "best": best,
            "started": pd.to_datetime(run.info.start_time, unit="ms").strftime("%Y-%m-%d %H:%M"),
        })
    return pd.DataFrame(rows)


def best_so_far(children: list, kinds: list[str], best_col: str, mode: str) -> float | None:
    """The best value among a search's trial runs that hold a score, by the one best-trial rule."""
    table = pd.DataFrame({"trial": [c.data.tags.get(TRIAL_ID, c.info.run_id) for c in children], "outcome": kinds,
                          best_col: [c.data.metrics.get(best_col, float("nan")) for c in children],
                          "best_epoch": [c.data.metrics.get(schema.best_key("epoch")) for c in children]})
    first = rank(table, best_col, mode).head(1)
    if first.empty or first["outcome"].iat[0] not in RANKABLE or pd.isna(first[best_col].iat[0]):
        return None
    return float(first[best_col].iat[0])


def download_checkpoint(info: SearchInfo, dst: str | Path, client: Reader | Any = None) -> Path | None:
    """The best model's weights (``best_model/checkpoint.pt`` on the parent run), or None if absent."""
    if not info.has_checkpoint:
        return None
    reader = _reader(client, info.uri)
    names = reader.list_artifacts(info.run_id, schema.BEST_MODEL)
    if schema.BEST_CHECKPOINT not in names:
        return None
    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(reader.download_artifact(info.run_id, schema.BEST_CHECKPOINT, str(dst)))


def best_trial_record(name: str, uri: str | None = None, *, client: Reader | Any = None,
                      table: pd.DataFrame | None = None) -> dict[str, Any]:
    """What ``best.yaml`` is made of (``spaces.exported.exported_from`` makes it): the best trial's full
    configuration, where its best value was found, and the study document as recorded.

    Keys: ``search, study, family, dataset``; ``objective: {metric, searched, mode, value, trial, epoch}``
    (``metric`` the study's metric, ``searched`` the value ranked, ``value`` the best trial's best value at
    ``epoch``); ``config`` (the trial's training config); ``study_doc`` (the study file's mapping).
    """
    reader = _reader(client, uri)
    info = search_info(name, uri, reader)
    table = table if table is not None else trials(name, uri, info=info, client=reader)
    best = best_row(table)
    if best is None:
        raise NoScore(f"search '{name}' has no trial with a '{info.objective}' score to export")
    with tempfile.TemporaryDirectory() as d:
        config = json.loads(Path(reader.download_artifact(best["run_id"], "config.json", d)).read_text())
    return {
        "search": name, "study": info.study, "family": info.family, "dataset": info.dataset,
        "objective": {"metric": info.target, "searched": info.objective, "mode": info.mode,
                      "value": float(best[info.best_column]), "trial": str(best["trial"]),
                      "epoch": None if pd.isna(best["best_epoch"]) else int(best["best_epoch"])},
        "config": {k: v for k, v in config.items() if not k.startswith("rs_")},
        "study_doc": info.study_doc,
    }


def reproductions(name: str, uri: str | None = None, client: Reader | Any = None) -> pd.DataFrame:
    """Summaries of every ``search reproduce`` of this search: one row per run, mean and std per metric."""
    reader = _reader(client, uri)
    rows = []
    for run in schema.reproductions(reader, name):
        m = run.data.metrics
        row = {"run": run.info.run_name, "seeds": run.data.params.get("seeds", ""),
               "epochs": run.data.params.get("epochs", ""), "objective": run.data.params.get("objective", "")}
        for key in sorted(k for k in m if k.endswith("_mean")):
            base = key.removesuffix("_mean")
            row[base] = f"{m[key]:.4f} ± {m.get(base + '_std', float('nan')):.4f}"
        rows.append(row)
    return pd.DataFrame(rows)


def reproduction_seeds(name: str, uri: str | None = None, client: Reader | Any = None) -> pd.DataFrame:
    """One row per seed of every ``search reproduce`` of this search: ``run`` (the reproduction), ``seed``, then
    every metric's last value (the bands over seeds of the report are drawn from these, never from repeats)."""
    reader = _reader(client, uri)
    rows = []
    for parent in schema.reproductions(reader, name):
        for run in schema.child_runs(reader, parent):
            seed = _float(run.data.params.get("seed"))
            rows.append({"run": parent.info.run_name, "seed": int(seed) if seed is not None else None,
                         **{k: v for k, v in run.data.metrics.items() if not k.startswith(("best_", "at_best."))}})
    return pd.DataFrame(rows)


def download_report_file(info: SearchInfo, name: str, dst: str | Path, client: Reader | Any = None) -> Path | None:
    """A file an earlier ``search report`` logged under ``report/`` (a stored projection), or None."""
    reader = _reader(client, info.uri)
    if schema.REPORT not in info.artifacts:
        return None
    if f"{schema.REPORT}/{name}" not in set(reader.list_artifacts(info.run_id, schema.REPORT)):
        return None
    return Path(reader.download_artifact(info.run_id, f"{schema.REPORT}/{name}", str(dst)))
