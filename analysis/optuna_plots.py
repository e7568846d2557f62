"""Optuna's own figures of a search (importances, parallel coordinates, history, contour, Pareto front).

The search's Optuna study lives inside Ray's searcher; the records hold every trial, so the study is
rebuilt from them (``optuna.trial.create_trial`` + ``study.add_trial``) and handed to
``optuna.visualization.matplotlib``: nothing here draws what Optuna draws.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import matplotlib
import matplotlib.pyplot as plt  # optuna's matplotlib figures go through pyplot; each is closed once saved
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.visualization import matplotlib as ovm

import records


def distribution(spec: Mapping[str, Any]):
    """The Optuna distribution of one searched parameter, as ``search_space.json`` records it."""
    kind = spec.get("type")
    if kind in ("choice", "grid"):
        return CategoricalDistribution(list(spec["values"]))
    log = bool(spec.get("log")) or kind == "loguniform"
    if kind == "int":
        return IntDistribution(int(spec["low"]), int(spec["high"]), log=log,
                               step=1 if log else int(spec.get("step") or 1))
    return FloatDistribution(float(spec["low"]), float(spec["high"]), log=log,
                             step=None if log else spec.get("step"))


def rebuild(trials: pd.DataFrame, space: Mapping[str, Mapping[str, Any]], metrics: list[str],
            directions: list[str]) -> optuna.Study:
    """An in-memory study holding every scored trial: its parameters and its ``metrics`` values."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=[("maximize" if d == "max" else "minimize") for d in directions])
    dists = {p: distribution(s) for p, s in space.items()}
    scored = trials[trials["outcome"].isin(records.RANKABLE)]
    for _, row in scored.iterrows():
        values = [row.get(m) for m in metrics]
        if any(v is None or pd.isna(v) for v in values):
            continue
        params = {p: row[p] for p in dists if p in row and not _missing(row[p])}
        params = {p: (int(v) if isinstance(dists[p], IntDistribution) else v) for p, v in params.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={p: dists[p] for p in params},
                                                  values=[float(v) for v in values]))
    return study


class _Known(optuna.importance.BaseImportanceEvaluator):
    """Importances already computed (fANOVA fits a forest: once per report is enough)."""

    def __init__(self, importances: dict[str, float]):
        self.importances = importances

    def evaluate(self, study, params=None, *, target=None) -> dict[str, float]:
        return dict(self.importances)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and pd.isna(v))


def _save(ax, path: Path) -> Path:
    fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
    fig.set_size_inches(max(fig.get_size_inches()[0], 6.4), max(fig.get_size_inches()[1], 4.2))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figures(study: optuna.Study, out: Path, metric: str) -> tuple[dict[str, Path], dict[str, str]]:
    """``{name: png}`` of the figures the study allows, and ``{name: why}`` for those it does not."""
    made, skipped = {}, {}
    n = len(study.trials)
    params = sorted({p for t in study.trials for p in t.params})
    # optuna sets the ggplot style process-wide: rc_context gives the report's other figures theirs back
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
        made["history"] = _save(ovm.plot_optimization_history(study, target_name=metric), out / "optuna_history.png")
        if n < 2 or not params:
            skipped["importances"] = f"{n} scored trial(s) and {len(params)} searched parameter(s)"
            return made, skipped
        try:
            importances = optuna.importance.get_param_importances(study)  # fANOVA: computed once, drawn below
            made["importances"] = _save(ovm.plot_param_importances(study, evaluator=_Known(importances),
                                                                   target_name=metric), out / "optuna_importances.png")
        except (RuntimeError, ValueError) as e:  # e.g. every trial scored the same
            importances = {}
            skipped["importances"] = str(e).splitlines()[0]
        made["parallel"] = _save(ovm.plot_parallel_coordinate(study, target_name=metric), out / "optuna_parallel.png")
        top = list(importances)[:2] if len(importances) >= 2 else params[:2]
        if len(top) == 2:
            made["contour"] = _save(ovm.plot_contour(study, params=top, target_name=metric), out / "optuna_contour.png")
        else:
            skipped["contour"] = "one searched parameter"
    return made, skipped


def pareto_front(study: optuna.Study, out: Path, names: list[str]) -> Path:
    """Optuna's Pareto-front scatter of a two-objective study (front highlighted)."""
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")
        return _save(ovm.plot_pareto_front(study, target_names=names), out)


__all__ = ["rebuild", "figures", "pareto_front", "distribution"]
