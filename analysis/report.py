"""``search report NAME``: one Markdown report of a finished (or running) search.

Everything comes from the MLflow records, so a report can be written on any machine that
reaches the tracking store, long after the search: trial counts, the best trials, a table
and a plot per searched parameter, learning curves, robustness vs eps when the trials
measured it, and a UMAP and calibration check of the best model when its weights were
logged. ``build`` raises ``records.RecordError`` when the search or the store does not exist
(the CLI turns that into exit code 2).
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Callable

import pandas as pd

import records

from . import plots, tables

Log = Callable[[str], None]


def _log(msg: str) -> None:
    print(msg, flush=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def _fmt(value, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "n/a"
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def _constraint(c: dict) -> str:
    bounds = [f"{c['metric']} >= {c['min']}"] if c.get("min") is not None else []
    bounds += [f"{c['metric']} <= {c['max']}"] if c.get("max") is not None else []
    return " and ".join(bounds) or str(c)


def _categorical(spec: dict) -> bool:
    return spec.get("type") in ("choice", "grid")


def _counts(df: pd.DataFrame) -> pd.DataFrame:
    order = {o: i for i, o in enumerate(records.OUTCOMES)}
    counts = df["outcome"].value_counts()
    counts = counts.sort_index(key=lambda s: s.map(lambda o: order.get(o, len(order))))
    return pd.DataFrame({"state": counts.index, "trials": counts.to_numpy()})


def _top(df: pd.DataFrame, info: records.SearchInfo, k: int) -> pd.DataFrame:
    cols = ["trial", *info.space, info.best_column, "best_epoch"]
    cols += [c for c in ("test_acc", "clean_acc") if c in df] + ["epochs", "state"]
    return df[cols].head(k)  # conditional parameters that did not apply print blank


def _robust_columns(names: list[str], have_clean: bool) -> list[str]:
    """fgsm, pgd, noise, each by increasing eps; eps 0 left out when it repeats clean_acc."""
    def key(name):
        attack, tag = plots.ROBUST_METRIC.match(name).groups()
        return plots.ATTACKS.index(attack), float(tag)

    return sorted((n for n in names if not (have_clean and key(n)[1] == 0)), key=key)


def _best_model(info: records.SearchInfo, out: Path, log: Log, umap_points: int) -> list[str]:
    """UMAP of the penultimate features and calibration of the logged best weights, on the test split."""
    from trainables.core import DatasetNotFound

    from . import calibration as calib
    from . import embedding

    lines = ["## Best model", ""]
    with tempfile.TemporaryDirectory() as d:
        ckpt = records.download_checkpoint(info, d)
        if ckpt is None:
            return lines + ["No `best_model/checkpoint.pt` artifact on the search run.", ""]
        log("loading the best model's checkpoint and the test split")
        try:
            model, cfg, split = embedding.from_checkpoint(ckpt, "test")
        except DatasetNotFound as e:
            log(f"skipping the best-model checks: {str(e).splitlines()[0]}")
            return lines + [f"Skipped: the dataset is not available here ({str(e).splitlines()[0]}).", ""]
    lines += [f"Weights of trial `{info.best_trial}` at epoch {info.best_epoch}, the epoch of its reported "
              f"best `{info.objective}`; evaluated on the {cfg.dataset} test split ({len(split)} samples).", ""]
    log(f"calibration on {len(split)} test samples")
    cal = calib.calibration(model, split, out / "calibration.png")
    lines += [f"Test accuracy {cal.accuracy:.4f}, mean confidence {cal.confidence:.4f}, "
              f"expected calibration error (15 bins) **{cal.ece:.4f}**.", "",
              "![reliability diagram](calibration.png)", ""]
    n = min(umap_points, len(split))
    log(f"UMAP of {n} test samples' penultimate features (the first call compiles umap's kernels)")
    t0 = time.perf_counter()
    embedding.umap_plot(model, split, out / "umap.png", n=n,
                        title=f"UMAP of penultimate features: trial {info.best_trial}, {n} test samples")
    log(f"UMAP done in {time.perf_counter() - t0:.1f} s")
    lines += ["![UMAP of the penultimate features, colored by label](umap.png)", ""]
    return lines


def build(name: str, uri: str | None = None, out: str | Path | None = None, *, top: int = 10,
          umap_points: int = 2000, best_model: bool = True, log: Log = _log) -> Path:
    """Write ``report.md`` (plus PNGs and CSVs) for the search ``name`` into ``out``; returns its path."""
    log(f"reading search '{name}' from {records.tracking_uri(uri)}")
    client = records.client_for(uri)
    info = records.search_info(name, uri, client)
    df = records.trials(name, uri, info=info, client=client)
    out = Path(out) if out is not None else Path("reports") / _slug(name)
    out.mkdir(parents=True, exist_ok=True)
    best, mode, obj = info.best_column, info.mode, info.objective
    tables.to_csv(df, out / "trials.csv")

    md = [f"# Search `{info.name}`", ""]
    if info.description:
        md += [info.description, ""]
    md += tables.to_markdown(pd.DataFrame({
        "": ["study", "family", "dataset", "objective", "sampler", "search state", "best", "MLflow"],
        "value": [info.study, info.family, info.dataset,
                  f"{obj} ({mode})" + (f", subject to {_constraint(info.constraint)}" if info.constraint else ""),
                  info.sampler, info.state, f"{_fmt(info.best_value)} (trial {info.best_trial or 'n/a'})",
                  f"{info.uri}, run {info.run_id}"]})).splitlines() + [""]
    if info.fixed:
        md += ["Fixed: " + ", ".join(f"`{k}={v}`" for k, v in info.fixed.items()), ""]
    if info.constraint:
        md += [f"`{best}` is the constrained score: the metric where the constraint holds, "
               "1000 worse where it does not.", ""]

    md += ["## Trials", ""]
    if df.empty:
        md += ["No trial was recorded.", ""]
        path = out / "report.md"
        path.write_text("\n".join(md))
        return path
    md += tables.to_markdown(_counts(df)).splitlines() + [""]
    failed = df[df["outcome"] == "failed"]
    for _, row in failed.head(5).iterrows():
        md.append(f"- `{row['trial']}` {row['state']}")
    md += [""] if len(failed) else []
    md += [f"### Top {min(top, len(df))} by `{best}`", ""]
    md += tables.to_markdown(_top(df, info, top)).splitlines()
    md += ["", "All trials: [trials.csv](trials.csv).", ""]

    log(f"reading the per-epoch history of {len(df)} trials")
    history = records.histories(name, uri, metrics=(obj,), info=info, client=client)
    common, at_common = records.at_common_epoch(df, history, obj)
    full = int((df["outcome"] == "completed").sum())
    md += ["## By parameter", "",
           f"Each value's trials at epoch {common}, the last epoch every scored trial reached (like with like), "
           f"beside their best `{obj}` over the epochs each ran. {full} of {len(df)} trials ran the full budget "
           f"of {info.max_epochs} epochs (`full_budget`)."
           + (" This search stopped trials early (ASHA): `mean_best` mixes budgets." if info.scheduler == "asha"
              else " No early stopping: every scored trial ran the full budget."), ""]
    log(f"{len(df)} trials; plotting {len(info.space)} searched parameters")
    for param, spec in info.space.items():
        md += [f"### `{param}`", ""]
        if _categorical(spec):
            table = tables.compare(df, param, best, mode, at_common=at_common if common else None, common_epoch=common)
            tables.to_csv(table, out / f"compare_{_slug(param)}.csv")
            md += tables.to_markdown(table).splitlines() + [""]
        if not df[best].notna().any():
            md += [f"No trial reported `{best}`.", ""]
        else:
            plots.by_parameter(df, param, best, out / f"param_{_slug(param)}.png", categorical=_categorical(spec))
            md += [f"![{best} by {param}](param_{_slug(param)}.png)", ""]

    md += ["## Learning curves", ""]
    if history.empty:
        md += [f"No per-epoch `{obj}` was logged.", ""]
    else:
        for param, spec in info.space.items():
            file = f"curves_{_slug(param)}.png"
            plots.learning_curves(history, out / file, obj, trials=df, color_by=param, categorical=_categorical(spec),
                                  title=f"{obj} per epoch, by {param}")
            md += [f"![{obj} per epoch, colored by {param}]({file})", ""]
        if not info.space:
            plots.learning_curves(history, out / "curves.png", obj)
            md += [f"![{obj} per epoch](curves.png)", ""]

    if plots.has_robust_metrics(df.columns):
        log("plotting robustness vs eps")
        robust_cols = [c for c in df.columns if plots.ROBUST_METRIC.match(str(c))]
        ranked = df[df[robust_cols].notna().any(axis=1)]
        k = min(3, len(ranked))
        plots.robustness_curve(ranked, out / "robustness.png", k=k, title=f"accuracy vs eps, best {k} trials")
        cols = ["trial"] + [c for c in ("clean_acc",) if c in df] + _robust_columns(robust_cols, "clean_acc" in df)
        cols += [c for c in ("indep_pgd_acc", "indep_apgd_acc") if c in df]
        md += ["## Robustness", "", "Final-epoch accuracies on the validation subset used by the robust "
               "evaluation (eps 0 is the clean accuracy).", "",
               "![accuracy vs eps](robustness.png)", ""]
        md += tables.to_markdown(ranked[cols].head(top)).splitlines() + [""]

    repro = records.reproductions(name, uri, client)
    if not repro.empty:
        md += ["## Reproductions", "", "`search reproduce` of the best configuration at full budget: mean ± std "
               "over seeds of the objective and the test metrics (final epoch).", ""]
        md += tables.to_markdown(repro).splitlines() + [""]

    if info.family == "regnet":
        from . import regnet

        log("RegNet sections")
        md += regnet.sections(info, df, out, log, best_model=best_model)

    if best_model:
        md += _best_model(info, out, log, umap_points)

    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
