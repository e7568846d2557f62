"""Read searches back from MLflow: ``search ls``, ``search show``, ``search export``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from . import tracking
from .errors import SearchError


def list_searches(uri: str | None = None) -> pd.DataFrame:
    client = tracking.client_for(uri, must_exist=True)
    exps = [e.experiment_id for e in client.search_experiments()]
    if not exps:
        return pd.DataFrame()
    parents = client.search_runs(exps, filter_string=f"tags.`{tracking.ROLE}` = 'search'",
                                 order_by=["attributes.start_time DESC"], max_results=1000)
    rows = []
    for run in parents:
        tags, metric = run.data.tags, run.data.params.get("objective", "")
        children = tracking.child_runs(client, run)
        states = [c.data.tags.get(tracking.STATE, "") for c in children]
        rows.append({
            "search": tags.get(tracking.SEARCH, run.info.run_name),
            "study": tags.get("rs.study", ""),
            "status": tags.get(tracking.STATE, run.info.status.lower()),
            "trials": len(children),
            "completed": sum(s == "completed" for s in states),
            "stopped": sum(s.startswith("stopped") for s in states),
            "failed": sum(s.startswith("failed") for s in states),
            "objective": metric,
            "best": run.data.metrics.get(tracking.best_key(metric)) if metric else None,
            "started": pd.to_datetime(run.info.start_time, unit="ms").strftime("%Y-%m-%d %H:%M"),
        })
    return pd.DataFrame(rows)


def _parent(client, name: str):
    parent = tracking.find_parent(client, name)
    if parent is None:
        raise SearchError(f"no search named '{name}' in MLflow (`search ls` lists the searches)")
    return parent


def trials_frame(name: str, uri: str | None = None) -> tuple[pd.DataFrame, str, str]:
    """Every trial of a search, best first: its searched parameters, best objective value, epochs, state."""
    from analysis import records  # the one reader of trial runs (typed parameters, best column)

    try:
        full = records.trials(name, uri)
    except records.SearchNotFound as e:
        raise SearchError(str(e)) from None
    metric, best = full.attrs["objective"], full.attrs["best_column"]
    table = full[["trial", *full.attrs["params"], best, "epochs", "state", "run_id"]].rename(columns={best: metric})
    return table, metric, full.attrs["mode"]


def top_trials(name: str, uri: str | None = None, k: int = 10) -> tuple[pd.DataFrame, str]:
    table, metric, _ = trials_frame(name, uri)
    return table.drop(columns=["run_id"], errors="ignore").head(k), metric


def export_best(name: str, out: str | Path, uri: str | None = None) -> Path:
    """Write the best trial's full configuration as YAML, ready for ``search reproduce``."""
    client = tracking.client_for(uri, must_exist=True)
    parent = _parent(client, name)
    table, metric, mode = trials_frame(name, uri)
    table = table.dropna(subset=[metric])
    if table.empty:
        raise SearchError(f"search '{name}' has no trial with a '{metric}' value to export")
    best = table.iloc[0]
    with tempfile.TemporaryDirectory() as d:
        config = json.loads(Path(client.download_artifacts(best["run_id"], "config.json", d)).read_text())
        study_dir = Path(client.download_artifacts(parent.info.run_id, "study", d))
        study_file = next(study_dir.glob("*.yaml"), None)
        reproduce = (yaml.safe_load(study_file.read_text()) or {}).get("reproduce", {}) if study_file else {}
    doc = {
        "study": parent.data.tags.get("rs.study"), "family": parent.data.tags.get("rs.family"),
        "dataset": parent.data.tags.get("rs.dataset"), "search": name,
        "objective": {"metric": metric, "mode": mode, "value": float(best[metric]), "trial": best["trial"]},
        "config": config,
        "reproduce": reproduce or {"seeds": [0, 1, 2]},
    }
    out = Path(out)
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out
