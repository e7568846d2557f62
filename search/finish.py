"""After ``Tuner.fit``: the records read back into the one trial table, the best trial's weights and
``best.yaml``, the Pareto front, and the search's final state on its parent run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import records
from records import schema, writer
from records.states import RANKABLE, SearchState
from spaces.exported import exported_from, write_exported
from spaces.study import Study

from .driver import SearchMeta
from .pareto import pareto_mask
from .tuner import objective_metric, trial_dirname_of


@dataclass
class SearchOutcome:
    name: str
    table: Any  # pandas DataFrame read back from MLflow (records.trials): one row per trial, best first
    best_config: dict[str, Any]
    best_value: float | None
    best_yaml: Path | None  # None when no trial holds a score
    parent_run_id: str
    seconds: float
    tracking_uri: str


def log_best_model(results, best, client, parent_run_id: str) -> None:
    """Log the best trial's checkpoint *at its best epoch* (the one the table reports) as ``best_model``."""
    trial_id, epoch = str(best["trial"]), best["best_epoch"]
    if pd.isna(epoch):
        return
    for r in results:
        if r.metrics.get("trial_id") != trial_id and not (r.path and Path(r.path).name == trial_dirname_of(trial_id)):
            continue
        for checkpoint, metrics in r.best_checkpoints or []:
            if int(metrics.get("epoch", metrics.get("training_iteration", -1))) == epoch:
                with checkpoint.as_directory() as d:
                    writer.log_best_model(client, parent_run_id, best["run_id"], d, trial_id, int(epoch))
                return
    logging.getLogger(__name__).warning("no checkpoint of trial %s at epoch %s: best_model not logged", trial_id, epoch)


def mark_pareto(study: Study, table, client, parent_run_id: str) -> list[str]:
    """The Pareto front over the objective and ``pareto_with``, both at each trial's best epoch (its trial ids)."""
    o, pw = study.objective, study.objective.pareto_with
    first = table.attrs["best_column"] if objective_metric(study) == o.metric else schema.at_best_key(o.metric)
    second = schema.best_key(pw.metric) if pw.metric == objective_metric(study) else schema.at_best_key(pw.metric)
    scored = table[table["outcome"].isin(RANKABLE)]
    if scored.empty or first not in scored or second not in scored:
        return []
    front = list(scored.loc[pareto_mask(scored, [(first, o.mode), (second, pw.mode)]), "trial"])
    writer.mark_pareto(client, parent_run_id, dict(zip(table["trial"], table["run_id"])), front)
    return front


def finish(results, study: Study, meta: SearchMeta, folder: Path, client, seconds: float) -> SearchOutcome:
    """The search's bookkeeping once every trial has ended: read back from the records, so the table, the
    best trial and ``best.yaml`` are the ones ``search show`` and ``search export`` give."""
    # Everything below reads the records back: the table, the best trial and best.yaml are the
    # ones `search show` and `search export` would give for this search.
    table = records.trials(meta.name, meta.tracking_uri, client=client)
    best = records.best_row(table)
    best_config, best_value, best_yaml = {}, None, None
    if best is not None:
        best_value = float(best[table.attrs["best_column"]])
        client.log_metric(meta.parent_run_id, table.attrs["best_column"], best_value)
        log_best_model(results, best, client, meta.parent_run_id)
        exported = exported_from(records.best_trial_record(meta.name, meta.tracking_uri, client=client, table=table))
        best_yaml, best_config = write_exported(exported, folder / schema.BEST_YAML), exported.config
        client.log_artifact(meta.parent_run_id, str(best_yaml))
    table.drop(columns=["run_id"]).to_csv(folder / "trials.csv", index=False)
    client.log_artifact(meta.parent_run_id, str(folder / "trials.csv"))
    if study.objective.pareto_with:
        front = mark_pareto(study, table, client, meta.parent_run_id)
        table.insert(table.columns.get_loc("outcome") + 1, "pareto", table["trial"].isin(front))  # as show reads it
    client.log_metric(meta.parent_run_id, "search_seconds", seconds)
    client.set_tag(meta.parent_run_id, schema.STATE, SearchState.FINISHED.value)
    client.set_terminated(meta.parent_run_id, "FINISHED")
    return SearchOutcome(meta.name, table, best_config, best_value, best_yaml, meta.parent_run_id, seconds,
                         meta.tracking_uri)
