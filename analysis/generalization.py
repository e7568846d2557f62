"""The generalization family's report sections (``Family.report``): the source -> target matrix, per-epoch
cross-domain curves, the fine-tuning table (k x freeze: before, after, source accuracy lost) and the
diagnostics of the best model (``analysis.diagnostics``, computed from its checkpoint)."""

from __future__ import annotations

import tempfile

import pandas as pd

import records
from trainables.core.metric_names import FINETUNE_ACC, FINETUNE_ACC_BEFORE, TEST_ACC, VAL_ACC, XDOMAIN_PREFIX

from . import plots, tables
from .sections import ReportContext

BEFORE, AFTER = FINETUNE_ACC_BEFORE, FINETUNE_ACC  # trainables.core.finetune reports them
SOURCE_METRICS = (TEST_ACC, VAL_ACC)  # the source's own accuracy: test split when the trial reached it


def xdomain_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if str(c).startswith(XDOMAIN_PREFIX)]


def source_target_matrix(ctx: ReportContext) -> pd.DataFrame:
    """One row per training dataset (its best trial): accuracy on the source and on every target, final epoch."""
    df = ctx.trials[ctx.trials["outcome"].isin(records.RANKABLE)]
    source = ctx.fixed_or_column("dataset")
    source = source.loc[df.index] if source is not None else pd.Series(ctx.info.dataset, index=df.index)
    own = next((m for m in SOURCE_METRICS if m in df and df[m].notna().any()), None)
    rows = []
    for name, sub in df.groupby(source, sort=False):
        best = sub.iloc[0]  # the trials are ranked best first
        row = {"trained on": name, "trial": best["trial"]}
        if own:
            row[f"{name} ({own})"] = best[own]
        row.update({c.removeprefix(XDOMAIN_PREFIX): best[c] for c in xdomain_columns(df)})
        rows.append(row)
    return pd.DataFrame(rows)


def finetune_table(ctx: ReportContext) -> pd.DataFrame:
    """Per (finetune_per_class, freeze): trials, target accuracy before and after fine-tuning (mean over trials) and
    the source accuracy lost (``val_acc`` at the last pretraining epoch minus at the last epoch)."""
    df = ctx.trials[ctx.trials["outcome"].isin(records.RANKABLE) & ctx.trials[AFTER].notna()].copy()
    ft_epochs = ctx.fixed_or_column("finetune_epochs")
    history = records.histories(ctx.info.name, ctx.info.uri, metrics=(VAL_ACC,), trial_ids=df["trial"],
                                info=ctx.info, client=ctx.client)
    val = history.set_index(["trial", "epoch"])["value"]
    lost = []
    for i, row in df.iterrows():
        last_pre = int(row["epochs"]) - int(ft_epochs.loc[i]) if ft_epochs is not None else None
        before, after = val.get((row["trial"], last_pre)), val.get((row["trial"], int(row["epochs"])))
        lost.append(before - after if before is not None and after is not None else float("nan"))
    df["source_acc_lost"] = lost
    keys = [k for k in ("finetune_per_class", "freeze") if ctx.fixed_or_column(k) is not None]
    for k in keys:
        df[k] = ctx.fixed_or_column(k).loc[df.index]
    grouped = df.groupby(keys, sort=True) if keys else [((), df)]
    rows = []
    for key, sub in grouped:
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), "n": len(sub), "before": sub[BEFORE].mean(), "after": sub[AFTER].mean(),
                     "gain": (sub[AFTER] - sub[BEFORE]).mean(), "source_acc_lost": sub["source_acc_lost"].mean()})
    return pd.DataFrame(rows)


def sections(ctx: ReportContext) -> list[str]:
    md = ["## Generalization", ""]
    cols = xdomain_columns(ctx.trials)
    if not cols:
        md += ctx.skip("Source -> target matrix", "the trials logged no xdomain_acc_* (set eval_datasets)")
    else:
        matrix = source_target_matrix(ctx)
        tables.to_csv(matrix, ctx.out / "source_target.csv")
        md += ["### Source -> target", "", "Rows: the dataset trained on (its best trial); columns: the dataset "
               "evaluated on (final epoch; the source's own column is its test accuracy when the trial reached it).",
               "", *tables.to_markdown(matrix).splitlines(), ""]
        best = ctx.trials.head(min(3, len(ctx.trials)))["trial"].tolist()
        history = records.histories(ctx.info.name, ctx.info.uri, metrics=(VAL_ACC, *cols), trial_ids=best,
                                    info=ctx.info, client=ctx.client)
        if not history.empty:
            curves = history[history["trial"] == best[0]].assign(trial=lambda h: h["metric"], metric="accuracy")
            series = pd.DataFrame({"trial": curves["trial"].unique()})
            series["evaluated on"] = series["trial"].str.removeprefix(XDOMAIN_PREFIX)
            plots.learning_curves(curves, ctx.out / "xdomain_curves.png", "accuracy", trials=series,
                                  color_by="evaluated on", categorical=True,
                                  title=f"trial {best[0]}: source (val_acc) and targets per epoch")
            md += ctx.image("xdomain_curves.png", "cross-domain accuracy per epoch")
    if AFTER in ctx.trials and ctx.trials[AFTER].notna().any():
        table = finetune_table(ctx)
        tables.to_csv(table, ctx.out / "finetune.csv")
        md += ["### Fine-tuning", "", f"Target accuracy before (`{BEFORE}`, the last pretraining epoch) and after "
               f"(`{AFTER}`, the last epoch) fine-tuning, and the source accuracy lost meanwhile (`val_acc`), mean "
               "over the trials of each cell.", "", *tables.to_markdown(table).splitlines(), ""]
    if ctx.best_model:
        md += _diagnostics(ctx)
    return md


def _diagnostics(ctx: ReportContext) -> list[str]:
    from trainables.core import DatasetNotFound

    from . import diagnostics

    with tempfile.TemporaryDirectory() as d:
        ckpt = records.download_checkpoint(ctx.info, d, ctx.client)
        if ckpt is None:
            return ctx.skip("Diagnostics", "no best_model checkpoint on the search run")
        ctx.log("diagnostics of the best model (source and every target's test split)")
        try:
            found = diagnostics.from_predictions(diagnostics.predictions_from_checkpoint(ckpt),
                                                 ctx.out / "diagnostics", umap=False)
        except DatasetNotFound as e:
            return ctx.skip("Diagnostics", f"a dataset is not available here ({str(e).splitlines()[0]})")
    rows = [{"domain": name, **{k: v for k, v in m.items() if not k.startswith("class")}}
            for name, m in found.items() if name != "pgd_sweep"]
    md = ["### Diagnostics of the best model", "", f"Trial `{ctx.info.best_trial}` at its best epoch: macro "
          "precision / recall / F1, top-k, expected calibration error, risk-coverage (AURC, selective accuracy) per "
          "domain; all numbers in [diagnostics/diagnostics.json](diagnostics/diagnostics.json).", "",
          *tables.to_markdown(pd.DataFrame(rows)).splitlines(), ""]
    for png in sorted((ctx.out / "diagnostics").glob("*.png")):
        md += ctx.image(f"diagnostics/{png.name}", png.stem.replace("_", " "))
    return md


__all__ = ["sections", "source_target_matrix", "finetune_table"]
