"""Figures of a search, saved as PNG: learning curves, the objective per parameter, robustness vs eps.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot:
nothing needs a display and a notebook's own backend is left alone. Each function returns
the path it wrote.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from records.states import Outcome
from trainables.core.metric_names import CLEAN_ACC, VAL_ACC, parse_metric_name

ATTACKS = ("fgsm", "pgd", "noise")  # the robust-accuracy attacks (a sample counts if right clean and perturbed)
COLORS = {"clean": "black", "fgsm": "tab:orange", "pgd": "tab:red", "noise": "tab:blue"}


def _figure(width: float = 6.4, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _is_numeric(values: pd.Series) -> bool:
    present = values[~values.map(_missing)]
    return len(present) > 0 and all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
                                    for v in present)


def _log_scale(values) -> bool:
    """A positive parameter spanning more than a decade (a learning rate, a weight decay) reads on a log axis."""
    v = np.asarray([x for x in values if not _missing(x)], dtype=float)
    return len(v) > 1 and bool((v > 0).all()) and v.max() / v.min() > 10


# ------------------------------------------------------------------ learning curves
def learning_curves(history: pd.DataFrame, out: str | Path, metric: str = VAL_ACC, *,
                    trials: pd.DataFrame | None = None, color_by: str | None = None, categorical: bool | None = None,
                    title: str = "", dashed: set | frozenset = frozenset()) -> Path:
    """``metric`` vs epoch, one line per trial; colored by the parameter ``color_by`` of ``trials``.

    ``history`` is ``records.histories``' long format. A categorical parameter gets one color
    per value and a legend, a numeric one a colormap (log-scaled when it spans decades);
    ``categorical`` overrides the guess (a choice among numbers is still a choice). Lines
    that end early are trials ASHA stopped; trials in ``dashed`` (infeasible under a constraint) are dashed.
    """
    data = history[history["metric"] == metric]
    if data.empty:
        raise ValueError(f"no '{metric}' history to plot (metrics present: {sorted(history['metric'].unique())})")
    fig = _figure()
    ax = fig.add_subplot()
    values = {}
    if color_by is not None:
        if trials is None or color_by not in trials:
            raise KeyError(f"color_by='{color_by}' needs a trials table with that column")
        values = dict(zip(trials["trial"], trials[color_by]))
    color_of, handles = None, []
    if categorical is None:
        categorical = not _is_numeric(pd.Series(list(values.values()), dtype=object))
    if values and not categorical:
        nums = [v for v in values.values() if not _missing(v)]
        norm = LogNorm(min(nums), max(nums)) if _log_scale(nums) else Normalize(min(nums), max(nums))
        cmap = colormaps["viridis"]

        def color_of(v):
            return "lightgrey" if _missing(v) else cmap(norm(v))

        fig.colorbar(_scalar_mappable(cmap, norm), ax=ax, label=color_by)
    elif values:
        levels = list(dict.fromkeys("n/a" if _missing(v) else str(v) for v in values.values()))
        palette = dict(zip(levels, colormaps["tab10"].colors * 3))

        def color_of(v):
            return palette.get("n/a" if _missing(v) else str(v), "lightgrey")

        handles = [Line2D([], [], color=palette[lv], label=lv) for lv in levels]
    for trial, group in data.groupby("trial", sort=False):
        group = group.sort_values("epoch")
        color = color_of(values.get(trial)) if color_of else None
        ax.plot(group["epoch"], group["value"], color=color, alpha=0.8, lw=1.2, marker="." if len(group) < 15 else None,
                ls="--" if trial in dashed else "-")
    if dashed:
        handles.append(Line2D([], [], color="gray", ls="--", label="infeasible"))
    if handles:
        ax.legend(handles=handles, title=color_by, fontsize="small")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{metric} per epoch ({data['trial'].nunique()} trials)")
    return _save(fig, out)


def _scalar_mappable(cmap, norm):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


# ------------------------------------------------------------------ objective per parameter
def by_parameter(trials: pd.DataFrame, param: str, metric: str, out: str | Path, *, categorical: bool | None = None,
                 title: str = "", infeasible: pd.Series | None = None) -> Path:
    """The metric against one parameter: box + jittered points per value, or a scatter for a number.

    A numeric parameter gets a scatter (log x when it spans decades) unless it takes a few
    integer values, which read better as categories; ``categorical`` overrides the guess.
    Trials stopped early are drawn hollow, failed trials (no value) are left out, ``infeasible`` ones (a
    constraint that did not hold) are red crosses.
    """
    data = trials[[param, metric] + (["outcome"] if "outcome" in trials else [])].copy()
    data = data[pd.to_numeric(data[metric], errors="coerce").notna()]
    completed = data["outcome"].eq(Outcome.COMPLETED.value) if "outcome" in data else pd.Series(True, index=data.index)
    bad = (infeasible.reindex(data.index).fillna(False).astype(bool) if infeasible is not None
           else pd.Series(False, index=data.index))
    fig = _figure(5.6, 4.0)
    ax = fig.add_subplot()
    y = data[metric].astype(float)
    present = data[param][~data[param].map(_missing)]
    numeric = _is_numeric(data[param])
    few_integers = numeric and present.nunique() <= 8 and all(float(v).is_integer() for v in present)
    if categorical is None:
        categorical = not numeric or few_integers
    if not categorical:
        x = data[param].astype(float)
        ax.scatter(x[completed & ~bad], y[completed & ~bad], color="tab:blue", label=Outcome.COMPLETED.value)
        ax.scatter(x[~completed & ~bad], y[~completed & ~bad], facecolors="none", edgecolors="tab:blue",
                   label="stopped early")
        if bad.any():
            ax.scatter(x[bad], y[bad], marker="x", color="tab:red", s=40, label="infeasible", zorder=4)
        if _log_scale(x):
            ax.set_xscale("log")
        ax.legend(fontsize="small")
    else:
        keys = data[param].map(lambda v: "n/a" if _missing(v) else str(v))
        levels = sorted(dict.fromkeys(keys), key=_level_order)
        groups = [y[keys == lv].to_numpy() for lv in levels]
        ax.boxplot(groups, positions=range(len(levels)), widths=0.5, showfliers=False)
        rng = np.random.default_rng(0)
        for i, lv in enumerate(levels):
            sel = keys == lv
            jitter = rng.uniform(-0.12, 0.12, sel.sum())
            done, no = completed[sel].to_numpy(), bad[sel].to_numpy()
            ax.scatter(i + jitter[done & ~no], y[sel][done & ~no], color="tab:blue", s=18, zorder=3)
            ax.scatter(i + jitter[~done & ~no], y[sel][~done & ~no], facecolors="none", edgecolors="tab:blue", s=18,
                       zorder=3)
            ax.scatter(i + jitter[no], y[sel][no], marker="x", color="tab:red", s=40, zorder=4)
        ax.set_xticks(range(len(levels)), [f"{lv}\n(n={len(g)})" for lv, g in zip(levels, groups)])
        ax.legend(handles=[Line2D([], [], ls="", marker="o", color="tab:blue", label=Outcome.COMPLETED.value),
                           Line2D([], [], ls="", marker="o", mfc="none", color="tab:blue", label="stopped early")]
                  + ([Line2D([], [], ls="", marker="x", color="tab:red", label="infeasible")] if bad.any() else []),
                  fontsize="small")

    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{metric} by {param}")
    return _save(fig, out)


def _level_order(key: str) -> tuple:
    """Numbers in numeric order, then other values in order of appearance (stable sort), then n/a."""
    if key == "n/a":
        return (2, 0.0)
    try:
        return (0, float(key))
    except ValueError:
        return (1, 0.0)


# ------------------------------------------------------------------ robustness vs eps
def robust_points(metrics: Mapping[str, float]) -> pd.DataFrame:
    """``attack, eps, acc`` rows from ``{fgsm,pgd,noise}_acc_eps<tag>`` names (tag = ``f"{eps:.4g}"``).

    ``clean_acc`` is every attack's point at eps 0 (an attack of size 0 changes nothing),
    unless an explicit ``*_eps0`` value was logged. Missing values (NaN) are skipped.
    """
    rows = []
    for name, value in metrics.items():
        parsed = parse_metric_name(name)
        if parsed is None or parsed[0] not in ATTACKS or _missing(value):
            continue
        rows.append((*parsed, float(value)))
    frame = pd.DataFrame(rows, columns=["attack", "eps", "acc"])
    clean = metrics.get(CLEAN_ACC)
    if not _missing(clean) and len(frame):
        extra = [(a, 0.0, float(clean)) for a in frame["attack"].unique()
                 if not ((frame["attack"] == a) & (frame["eps"] == 0)).any()]
        frame = pd.concat([frame, pd.DataFrame(extra, columns=frame.columns)], ignore_index=True)
    order = {a: i for i, a in enumerate(ATTACKS)}
    return frame.sort_values(["attack", "eps"], key=lambda s: s.map(order) if s.name == "attack" else s,
                             ignore_index=True)


def robust_columns(columns) -> list[str]:
    """The robust-accuracy metrics among ``columns`` (``fgsm``, ``pgd``, ``noise`` at each eps)."""
    return [c for c in columns if (p := parse_metric_name(c)) is not None and p[0] in ATTACKS]


def has_robust_metrics(columns) -> bool:
    return bool(robust_columns(columns))


def robustness_curve(source: Mapping[str, float] | pd.DataFrame, out: str | Path, *, k: int = 1,
                     title: str = "") -> Path:
    """Accuracy vs eps for FGSM, PGD and uniform noise (eps 0 = clean accuracy).

    ``source`` is one run's metrics (a dict) or a trials table: then its first ``k`` rows (the
    best trials, as ``records.trials`` sorts them) with robust metrics, one line style each.
    """
    if isinstance(source, pd.DataFrame):
        rows = source[robust_columns(source.columns)].notna().any(axis=1)
        picked = source[rows].head(k)
        labels = picked["trial"].astype(str).tolist() if "trial" in picked else [str(i) for i in picked.index]
        runs = [(label, robust_points(row.to_dict())) for label, (_, row) in zip(labels, picked.iterrows())]
    else:
        runs = [("", robust_points(source))]
    runs = [(label, pts) for label, pts in runs if len(pts)]
    if not runs:
        raise ValueError("no robust metrics (fgsm/pgd/noise_acc_eps<eps>) to plot")
    fig = _figure(5.6, 4.0)
    ax = fig.add_subplot()
    styles = ["-", "--", ":", "-."]
    for i, (label, pts) in enumerate(runs):
        for attack, group in pts.groupby("attack", sort=False):
            name = attack if not label else f"{attack} ({label})"
            ax.plot(group["eps"], group["acc"], styles[i % len(styles)], marker="o", color=COLORS[attack], label=name)
    ax.set_xlabel("eps (L-inf, pixel scale [0, 1])")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or "accuracy under perturbation")
    return _save(fig, out)
