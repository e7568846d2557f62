"""``search report NAME``: one report of a finished (or running) search, as Markdown and one HTML page.

Everything comes from the MLflow records, so a report can be written on any machine that
reaches the tracking store, long after the search: trial counts, the best trials, a table
and a plot per searched parameter, learning curves, robustness vs eps when the trials
measured it (with the independent attack and the masking flag), Optuna's figures of the
rebuilt study, reproductions, the family's own sections (``Family.report``), and a UMAP and
calibration check of the best model when its weights were logged. Tables and figures show the
study's metric, never a constraint's penalized score. The folder is then logged as the search
run's ``report/`` artifacts. ``build`` raises ``records.RecordError`` when the search or the
store does not exist (the CLI turns that into exit code 2).
"""

from __future__ import annotations

import importlib
import tempfile
import time
from pathlib import Path

import pandas as pd

import records
from records import writer
from trainables.core.metric_names import CLEAN_ACC, INDEPENDENT_METRICS, TEST_ACC, parse_metric_name
from trainables.families import FAMILIES

from . import html, optuna_plots, plots, tables
from .sections import Log, ReportContext
from .sections import slug as _slug

UMAP_STORE = "umap_projection.npz"  # the best model's projection, logged with the report and reused by the next


def _log(msg: str) -> None:
    print(msg, flush=True)


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
    cols = ["trial", *info.space, info.shown_column] + ([records.FEASIBLE] if records.FEASIBLE in df else [])
    cols += ["best_epoch"] + [c for c in (TEST_ACC, CLEAN_ACC) if c in df and c != info.target]
    cols += ["epochs", "state"]
    return df[cols].head(k).rename(columns={info.shown_column: info.target})  # blank: a condition did not apply


def _robust_columns(names: list[str], have_clean: bool) -> list[str]:
    """fgsm, pgd, noise, each by increasing eps; eps 0 left out when it repeats clean_acc."""
    def key(name):
        attack, eps = parse_metric_name(name)
        return plots.ATTACKS.index(attack), eps

    return sorted((n for n in names if not (have_clean and key(n)[1] == 0)), key=key)


def _best_model(ctx: ReportContext, umap_points: int) -> list[str]:
    """UMAP of the penultimate features and calibration of the logged best weights, on the test split."""
    from trainables.core import DatasetNotFound

    from . import calibration as calib
    from . import embedding

    info, out, log = ctx.info, ctx.out, ctx.log
    lines = ["## Best model", ""]
    with tempfile.TemporaryDirectory() as d:
        ckpt = records.download_checkpoint(info, d, ctx.client)
        if ckpt is None:
            return lines + ctx.skip("Best model", "no `best_model/checkpoint.pt` artifact on the search run")
        log("loading the best model's checkpoint and the test split")
        try:
            model, cfg, split = embedding.from_checkpoint(ckpt, "test")
        except DatasetNotFound as e:
            return lines + ctx.skip("Best model", f"the dataset is not available here ({str(e).splitlines()[0]})")
    lines += [f"Weights of trial `{info.best_trial}` at epoch {info.best_epoch}, the epoch of its reported "
              f"best `{info.target}`" + (" (where the constraint held)" if info.constraint else "")
              + f"; evaluated on the {cfg.dataset} test split ({len(split)} samples).", ""]
    log(f"calibration on {len(split)} test samples")
    cal = calib.calibration(model, split, out / "calibration.png")
    lines += [f"Test accuracy {cal.accuracy:.4f}, mean confidence {cal.confidence:.4f}, "
              f"expected calibration error (15 bins) **{cal.ece:.4f}**.", "",
              "![reliability diagram](calibration.png)", ""]
    n = min(umap_points, len(split))
    stored = out / UMAP_STORE
    if not stored.is_file():
        records.download_report_file(info, UMAP_STORE, out, ctx.client)  # an earlier report's projection
    t0 = time.perf_counter()
    xy, labels, reused = embedding.projection(model, split, n=n, stored=stored,
                                              key=f"{info.run_id}/{info.best_trial}/{info.best_epoch}")
    log(f"UMAP of {n} test samples' penultimate features: " + (
        f"the projection stored by an earlier report ({UMAP_STORE})" if reused else
        f"computed in {time.perf_counter() - t0:.1f} s (numba kernels cached in {embedding.numba_cache()})"))
    embedding.umap_plot(model, split, out / "umap.png", n=n, stored=stored,
                        key=f"{info.run_id}/{info.best_trial}/{info.best_epoch}",
                        title=f"UMAP of penultimate features: trial {info.best_trial}, {n} test samples")
    lines += ["![UMAP of the penultimate features, colored by label](umap.png)", ""]
    return lines


def _optuna_section(ctx: ReportContext) -> list[str]:
    """Optuna's importances, parallel coordinates, history and contour, on the searched metric."""
    md = ["## Search space (Optuna)", ""]
    if not ctx.info.space:
        return md + ctx.skip("Optuna figures", "nothing was searched")
    feasible = ctx.trials[~ctx.infeasible]  # an infeasible trial's metric is not what the search looked for
    study = optuna_plots.rebuild(feasible, ctx.info.space, [ctx.shown], [ctx.info.mode])
    if not study.trials:
        return md + ctx.skip("Optuna figures", f"no feasible trial holds a `{ctx.metric}` score")
    made, skipped = optuna_plots.figures(study, ctx.out, ctx.metric)
    left_out = int(ctx.infeasible.sum())
    md += [f"The {len(study.trials)} scored trials rebuilt as an Optuna study, on `{ctx.metric}` at each trial's "
           "best epoch (figures by `optuna.visualization.matplotlib`)"
           + (f"; the {left_out} infeasible trials are left out." if left_out else "."), ""]
    for name, path in made.items():
        md += ctx.image(path.name, f"optuna {name}")
    for name, why in skipped.items():
        md += ctx.skip(f"Optuna {name}", why)
    return md


def _family_sections(ctx: ReportContext) -> list[str]:
    """The family's own sections (``Family.report``, ``"module:function"``), if it declares any."""
    family = FAMILIES.get(ctx.info.family) if ctx.info.family in FAMILIES else None
    if family is None or not family.report:
        return []
    module, _, function = family.report.partition(":")
    ctx.log(f"{ctx.info.family} sections")
    return getattr(importlib.import_module(module), function)(ctx)


def build(name: str, uri: str | None = None, out: str | Path | None = None, *, top: int = 10,
          umap_points: int = 2000, best_model: bool = True, log: Log = _log, log_to_mlflow: bool = True) -> Path:
    """Write ``report.md`` and ``report.html`` (plus PNGs and CSVs) for the search ``name`` into ``out``, log them as
    the search run's ``report/`` artifacts (``log_to_mlflow``); returns the Markdown's path."""
    log(f"reading search '{name}' from {records.tracking_uri(uri)}")
    client = records.reader_for(uri)
    info = records.search_info(name, uri, client)
    df = records.trials(name, uri, info=info, client=client)
    out = Path(out) if out is not None else Path("reports") / _slug(name)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ReportContext(info, df, out, client, log, top, best_model)
    shown, mode, metric = info.shown_column, info.mode, info.target
    tables.to_csv(df, out / "trials.csv")

    md = [f"# Search `{info.name}`", ""]
    if info.description:
        md += [info.description, ""]
    md += tables.to_markdown(pd.DataFrame({
        "": ["study", "family", "dataset", "objective", "sampler", "search state", "best", "MLflow"],
        "value": [info.study, info.family, info.dataset,
                  f"{metric} ({mode})" + (f", subject to {_constraint(info.constraint)}" if info.constraint else ""),
                  info.sampler, info.state, f"{_fmt(_best_value(df, info))} (trial {info.best_trial or 'n/a'})",
                  f"{info.uri}, run {info.run_id}"]})).splitlines() + [""]
    if info.fixed:
        md += ["Fixed: " + ", ".join(f"`{k}={v}`" for k, v in info.fixed.items()), ""]
    if info.constraint:
        md += [f"Tables and plots show `{metric}` at each trial's best epoch; `{records.FEASIBLE}` says whether "
               f"{_constraint(info.constraint)} held there (infeasible trials: red crosses, dashed curves). The "
               "search ranked on a penalized score that puts every infeasible trial after every feasible one.", ""]

    md += ["## Trials", ""]
    if df.empty:
        md += ["No trial was recorded.", ""]
        return _finish(ctx, md)
    md += tables.to_markdown(_counts(df)).splitlines() + [""]
    failed = df[df["outcome"] == records.Outcome.FAILED]
    for _, row in failed.head(5).iterrows():
        md.append(f"- `{row['trial']}` {row['state']}")
    md += [""] if len(failed) else []
    md += [f"### Top {min(top, len(df))} by `{metric}`", ""]
    md += tables.to_markdown(_top(df, info, top)).splitlines()
    md += ["", "All trials: [trials.csv](trials.csv).", ""]

    log(f"reading the per-epoch history of {len(df)} trials")
    history = records.histories(name, uri, metrics=(metric,), info=info, client=client)
    common, at_common = records.at_common_epoch(df, history, metric)
    full = int((df["outcome"] == records.Outcome.COMPLETED).sum())
    md += ["## By parameter", "",
           f"Each value's trials at epoch {common}, the last epoch every scored trial reached (like with like), "
           f"beside their best `{metric}` over the epochs each ran. {full} of {len(df)} trials ran the full budget "
           f"of {info.max_epochs} epochs (`full_budget`)."
           + (" This search stopped trials early (ASHA): `mean_best` mixes budgets." if info.scheduler == "asha"
              else " No early stopping: every scored trial ran the full budget."), ""]
    log(f"{len(df)} trials; plotting {len(info.space)} searched parameters")
    for param, spec in info.space.items():
        md += [f"### `{param}`", ""]
        if _categorical(spec):
            table = tables.compare(df, param, shown, mode, at_common=at_common if common else None,
                                   common_epoch=common).rename(columns={"mean_best": f"mean_best_{metric}"})
            tables.to_csv(table, out / f"compare_{_slug(param)}.csv")
            md += tables.to_markdown(table).splitlines() + [""]
        if not df[shown].notna().any():
            md += [f"No trial reported `{metric}`.", ""]
        else:
            plots.by_parameter(df, param, shown, out / f"param_{_slug(param)}.png", categorical=_categorical(spec),
                               infeasible=ctx.infeasible, title=f"{metric} by {param}")
            md += [f"![{metric} by {param}](param_{_slug(param)}.png)", ""]

    md += ["## Learning curves", ""]
    dashed = set(df.loc[ctx.infeasible, "trial"])
    if history.empty:
        md += ctx.skip("Learning curves", f"no per-epoch `{metric}` was logged")
    else:
        for param, spec in info.space.items():
            file = f"curves_{_slug(param)}.png"
            plots.learning_curves(history, out / file, metric, trials=df, color_by=param,
                                  categorical=_categorical(spec), title=f"{metric} per epoch, by {param}", dashed=dashed)
            md += [f"![{metric} per epoch, colored by {param}]({file})", ""]
        if not info.space:
            plots.learning_curves(history, out / "curves.png", metric, dashed=dashed)
            md += [f"![{metric} per epoch](curves.png)", ""]

    md += _robustness(ctx)
    md += _optuna_section(ctx)

    repro = records.reproductions(name, uri, client)
    if not repro.empty:
        md += ["## Reproductions", "", "`search reproduce` of the best configuration at full budget: mean ± std "
               "over seeds of the objective and the test metrics (final epoch).", ""]
        md += tables.to_markdown(repro).splitlines() + [""]

    md += _family_sections(ctx)
    if best_model:
        md += _best_model(ctx, umap_points)
    else:
        ctx.skip("Best model", "--no-best-model")
    return _finish(ctx, md, log_to_mlflow)


def _best_value(df: pd.DataFrame, info: records.SearchInfo):
    best = records.best_row(df)
    return None if best is None else best[info.shown_column]


def _robustness(ctx: ReportContext) -> list[str]:
    df = ctx.trials
    robust_cols = plots.robust_columns(df.columns)
    if not robust_cols:
        return []
    ctx.log("plotting robustness vs eps")
    ranked = df[df[robust_cols].notna().any(axis=1)]
    k = min(3, len(ranked))
    plots.robustness_curve(ranked, ctx.out / "robustness.png", k=k, title=f"accuracy vs eps, best {k} trials")
    cols = ["trial"] + [c for c in (CLEAN_ACC,) if c in df] + _robust_columns(robust_cols, CLEAN_ACC in df)
    cols += [c for c in INDEPENDENT_METRICS if c in df]
    md = ["## Robustness", "", "Final-epoch accuracies on the validation subset used by the robust evaluation "
          "(eps 0 is the clean accuracy). Beside them, the independent torchattacks check at `indep_eps` and "
          "`gradient_masking` (1: our PGD beats the strongest independent attack by more than 2 points: the robust "
          "numbers of that trial are not to be trusted).", "", "![accuracy vs eps](robustness.png)", ""]
    return md + tables.to_markdown(ranked[cols].head(ctx.top)).splitlines() + [""]


def _finish(ctx: ReportContext, md: list[str], log_to_mlflow: bool = True) -> Path:
    if ctx.skipped:
        md += ["## Skipped sections", ""] + [f"- {section}: {why}" for section, why in ctx.skipped] + [""]
    path = ctx.out / "report.md"
    path.write_text("\n".join(md))
    page = html.write(path, ctx.out / "report.html", title=f"Search {ctx.info.name}")
    ctx.log(f"report written to {path} and {page}")
    if log_to_mlflow:
        where = writer.log_report(ctx.info, ctx.out)
        ctx.log(f"report logged to MLflow: {where}")
    return path
