"""RegNet sections of a search report: accuracy vs mu_T and F_k, FGSM eps curves with seed bands,
the 3-D latent space of a three-class model (clean and under FGSM), per-class histograms against the
target density, and kurtosis / skewness vs mu_T (issue 10).

The plotting functions take plain tables and tensors, so the benchmark and a notebook use them too;
``sections`` reads a search's trial table (and, when logged, its best weights) and returns Markdown.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

import records
from trainables.core.metric_names import (
    CLEAN_ACC,
    GAUSSIANITY_METRICS,
    GRADIENT_MASKING,
    INDEP_APGD_DLR,
    KURTOSIS_MEAN,
    SKEW_MEAN,
    TEST_ACC,
    parse_metric_name,
    split_metric,
)
from trainables.core.metric_names import HIST_RMSE as HIST_RMSE_STAT

from .plots import _figure, _save
from .sections import ReportContext

PLAIN = "fgsm_plain"  # RobustEval's plain FGSM accuracy (every sample counts): the thesis's measure
HIST_RMSE, KURTOSIS, SKEW = (split_metric("val", s) for s in (HIST_RMSE_STAT, KURTOSIS_MEAN, SKEW_MEAN))


def plain_columns(columns) -> list[str]:
    return [c for c in columns if (p := parse_metric_name(c)) is not None and p[0] == PLAIN]


# ---------------------------------------------------------------- accuracy / moments vs a parameter
def metric_vs_param(df: pd.DataFrame, param: str, metrics: Sequence[str], out: str | Path, *,
                    group: pd.Series | None = None, baseline: pd.Series | None = None, log_x: bool = True,
                    title: str = "", ylabel: str | None = None) -> Path:
    """Each metric vs ``param`` (one series per value of ``group``), plus the baseline trials' mean as a line."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    groups = group.fillna("n/a").astype(str) if group is not None else pd.Series("", index=df.index)
    is_base = baseline if baseline is not None else pd.Series(False, index=df.index)
    for metric in metrics:
        if metric not in df:
            continue
        for g in sorted(groups[~is_base].unique()):
            sel = df[(groups == g) & ~is_base & df[param].notna() & df[metric].notna()].sort_values(param)
            if len(sel):
                means = sel.groupby(param)[metric].agg(["mean", "std"]).reset_index()
                label = " ".join(x for x in (metric, g) if x)
                ax.errorbar(means[param], means["mean"], yerr=means["std"].fillna(0), marker="o", ms=4, capsize=2,
                            label=label)
        base = df[is_base & df[metric].notna()][metric]
        if len(base):
            ax.axhline(base.mean(), ls="--", color="gray", label=f"{metric} cross-entropy (mean of {len(base)})")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(param)
    ax.set_ylabel(ylabel or ", ".join(metrics))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax.set_title(title or f"{', '.join(metrics)} vs {param}")
    return _save(fig, out)


# ---------------------------------------------------------------- eps curves with seed bands
def eps_points(row: Mapping[str, float], attack: str = PLAIN, clean: str = CLEAN_ACC):
    """(eps, acc) pairs from ``fgsm_plain_acc_eps<tag>`` metrics, with eps 0 = ``clean`` when not logged."""
    pts = {p[1]: float(v) for k, v in row.items()
           if (p := parse_metric_name(k)) is not None and p[0] == attack and pd.notna(v)}
    if 0.0 not in pts and pd.notna(row.get(clean, float("nan"))):
        pts[0.0] = float(row[clean])
    return sorted(pts.items())


def eps_bands(curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]], out: str | Path, *,
              title: str = "", ylabel: str = "plain accuracy (every sample)") -> Path:
    """``{label: (eps, mean, std)}`` as lines with mean +- std bands."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for label, (eps, mean, std) in curves.items():
        eps, mean, std = map(np.asarray, (eps, mean, std))
        (line,) = ax.plot(eps, mean, marker="o", ms=3, label=label)
        if np.isfinite(std).any():  # NaN std: one seed, drawn as a line without a band
            ax.fill_between(eps, mean - std, mean + std, alpha=0.2, color=line.get_color())
    ax.set(xlabel="FGSM eps (L-inf, pixel scale [0, 1])", ylabel=ylabel, ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or "accuracy under FGSM (band: +- std over n distinct seeds)")
    return _save(fig, out)


def grouped_eps_curves(df: pd.DataFrame, keys: Sequence[str], max_groups: int = 5, seed: str = "seed"):
    """Trials grouped by ``keys`` (the searched parameters but the seed): ``{label: (eps, mean, std)}``.

    Bands are over *distinct seeds*: trials repeating a configuration with a seed already counted (a grid that
    repeats a point) add nothing, so the first (best-ranked) trial per seed is kept and ``n`` counts seeds. With
    one seed the std is NaN (``eps_bands`` draws a line without a band) and the label says ``n=1``.
    """
    cols = plain_columns(df.columns)
    if not cols:
        return {}
    keys = [k for k in keys if k in df and k != seed]
    grouped = df.groupby(keys, dropna=False, sort=False) if keys else [((), df)]
    curves = {}
    for key, sub in grouped:
        if seed in sub:
            sub = sub.drop_duplicates(seed)
        else:  # every trial ran the study's one seed: repeats of a configuration are one run
            sub = sub.head(1)
        per_trial = [dict(eps_points(r)) for r in sub.to_dict("records")]
        eps = sorted(set().union(*per_trial))
        if not eps:
            continue
        vals = np.array([[p.get(e, np.nan) for e in eps] for p in per_trial], dtype=float)
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, key) if not pd.isna(v)) or "all trials"
        std = np.nanstd(vals, 0, ddof=1) if len(vals) > 1 else np.full(len(eps), np.nan)
        curves[f"{label} (n={len(vals)})"] = (eps, np.nanmean(vals, 0), std)
        if len(curves) >= max_groups:
            break
    return curves


# ---------------------------------------------------------------- latent space of one model
def latent_scatter(latents: Mapping[str, tuple[torch.Tensor, torch.Tensor]], mu_t: float, out: str | Path, *,
                   max_points: int = 1500, title: str = "") -> Path:
    """3-D scatter of d = 3 latents, one panel per ``{label: (z, y)}`` (e.g. clean, eps 0.1, eps 0.3)."""
    fig = _figure(5.0 * len(latents), 4.8)
    for i, (label, (z, y)) in enumerate(latents.items()):
        ax = fig.add_subplot(1, len(latents), i + 1, projection="3d")
        z, y = z[:max_points].detach().cpu().numpy(), y[:max_points].cpu().numpy()
        for c in np.unique(y):
            pts = z[y == c]
            ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=3, alpha=0.5, label=f"class {c}")
        targets = mu_t * np.eye(3)
        ax.scatter(targets[:, 0], targets[:, 1], targets[:, 2], marker="x", s=80, color="black", label="mu_T")
        ax.set_title(label)
        ax.set(xlabel="z0", ylabel="z1", zlabel="z2")
        if i == 0:
            ax.legend(fontsize="x-small", loc="upper left")
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def latent_histograms(z: torch.Tensor, y: torch.Tensor, mu_t: float, sigma_t: float, out: str | Path, *,
                      bins: int = 40, width: float = 4.0) -> tuple[Path, list[float]]:
    """Per class, the histogram of its own-axis latent z_c against the N(mu_T, sigma_T) density, RMSE in the title.

    The RMSE is ``regnet.hist_rmse`` (histogram normalized by the whole class count, range mu_T +- 4 sigma_T).
    """
    from trainables.core.gaussian_head import hist_rmse

    rmse = hist_rmse(z, y, mu_t, sigma_t, bins=bins, width=width).tolist()
    d = z.shape[1]
    cols = min(d, 5)
    rows = math.ceil(d / cols)
    fig = _figure(3.0 * cols, 2.4 * rows)
    grid = np.linspace(mu_t - width * sigma_t, mu_t + width * sigma_t, 200)
    pdf = np.exp(-0.5 * ((grid - mu_t) / sigma_t) ** 2) / (sigma_t * math.sqrt(2 * math.pi))
    zz, yy = z.detach().double().cpu(), y.cpu()
    for c in range(d):
        ax = fig.add_subplot(rows, cols, c + 1)
        own = zz[yy == c, c].numpy()
        if len(own):  # drawn over the data's range too (the RMSE stays on mu_T +- width sigma_T)
            lo, hi = min(grid[0], np.percentile(own, 1)), max(grid[-1], np.percentile(own, 99))
            counts, edges = np.histogram(own, bins=bins, range=(lo, hi))
            ax.stairs(counts / (len(own) * (edges[1] - edges[0])), edges, fill=True, alpha=0.5)
        ax.plot(grid, pdf, color="black", lw=1)
        ax.axvspan(grid[0], grid[-1], color="gray", alpha=0.08)
        ax.set_title(f"class {c}: RMSE {rmse[c]:.3f}", fontsize="small")
        ax.tick_params(labelsize="x-small")
    return _save(fig, out), rmse


# ---------------------------------------------------------------- the report's sections
def sections(ctx: ReportContext) -> list[str]:
    """The regnet family's report sections (``Family.report``): accuracy vs mu_T / F_k, Gaussianity vs mu_T and over
    epochs, FGSM eps curves with bands over distinct seeds and over ``search reproduce`` seeds, latent plots."""
    df, out = ctx.trials, ctx.out
    md = ["## RegNet", ""]
    head = ctx.fixed_or_column("head")
    is_ce = (head == "linear") if head is not None else pd.Series(False, index=df.index)
    loss = ctx.fixed_or_column("regnet_loss")
    work = df.copy()
    for p in ("mu_t", "kurtosis_factor"):
        col = ctx.fixed_or_column(p)
        if col is not None:
            work[p] = pd.to_numeric(col, errors="coerce")
    acc = TEST_ACC if TEST_ACC in work and work[TEST_ACC].notna().any() else ctx.shown
    if "mu_t" in work and work.loc[~is_ce, "mu_t"].nunique() > 1:
        metric_vs_param(work, "mu_t", [acc], out / "regnet_acc_vs_mu.png", group=loss, baseline=is_ce, ylabel=acc,
                        title=f"{acc} vs mu_T (one curve per loss; dashed: cross-entropy)")
        md += [f"![{acc} vs mu_T](regnet_acc_vs_mu.png)", ""]
        moments = [m for m in (KURTOSIS, SKEW) if m in work]
        if moments:
            metric_vs_param(work, "mu_t", moments, out / "regnet_moments_vs_mu.png", baseline=is_ce,
                            ylabel="excess kurtosis / skewness (mean over classes)",
                            title="kurtosis and skewness of the validation latents vs mu_T")
            md += ["![kurtosis and skewness vs mu_T](regnet_moments_vs_mu.png)", "",
                   "Kurtosis grows with mu_T even when the histograms look Gaussian (a few far points dominate): "
                   f"read `{HIST_RMSE}` for Gaussianity.", ""]
        if HIST_RMSE in work:
            metric_vs_param(work, "mu_t", [HIST_RMSE], out / "regnet_rmse_vs_mu.png", baseline=is_ce,
                            ylabel="histogram RMSE against N(mu_T, sigma_T)",
                            title="Gaussianity of the validation latents vs mu_T (lower is more Gaussian)")
            md += [f"![{HIST_RMSE} vs mu_T](regnet_rmse_vs_mu.png)", ""]
    if "kurtosis_factor" in work and work.loc[~is_ce, "kurtosis_factor"].nunique() > 1:
        fk = work[work["kurtosis_factor"] > 0] if (work["kurtosis_factor"] > 0).any() else work
        penalty = ctx.fixed_or_column("kurtosis_penalty")
        metric_vs_param(fk, "kurtosis_factor", [acc], out / "regnet_acc_vs_fk.png", ylabel=acc,
                        group=penalty.loc[fk.index] if penalty is not None else None, baseline=is_ce.loc[fk.index],
                        title=f"{acc} vs F_k (F_k > 0 on a log axis)")
        md += [f"![{acc} vs F_k](regnet_acc_vs_fk.png)", ""]
    md += _gaussianity_over_epochs(ctx)
    md += _eps_sections(ctx)
    if ctx.best_model:
        md += _best_model_sections(ctx)
    return md


def _gaussianity_over_epochs(ctx: ReportContext) -> list[str]:
    shown = [m for m in (HIST_RMSE, KURTOSIS) if m in ctx.trials]
    if not shown:
        return ctx.skip("Gaussianity over epochs", "no trial has a Gaussian head (no gaussianity metrics)")
    from .plots import learning_curves

    best = ctx.trials.head(min(5, len(ctx.trials)))["trial"].tolist()
    history = records.histories(ctx.info.name, ctx.info.uri, metrics=shown, trial_ids=best, info=ctx.info,
                                client=ctx.client)
    md = ["### Gaussianity over epochs", "", f"The {len(best)} best trials' validation latents, every epoch.", ""]
    for m in shown:
        if (history["metric"] == m).any():
            learning_curves(history, ctx.out / f"regnet_{m}_epochs.png", m, title=f"{m} per epoch, best trials")
            md += [f"![{m} per epoch](regnet_{m}_epochs.png)", ""]
    return md


def _eps_sections(ctx: ReportContext) -> list[str]:
    keys = [p for p in ctx.info.space if p != "seed"]
    curves = grouped_eps_curves(ctx.trials, keys)
    if not curves:
        return ctx.skip("FGSM eps curves", "the trials logged no fgsm_plain_acc_eps* (set eval_eps)")
    notes = []
    seeds = records.reproduction_seeds(ctx.info.name, ctx.info.uri, ctx.client)
    if not seeds.empty and plain_columns(seeds.columns):
        for run, sub in seeds.groupby("run", sort=False):
            for v in grouped_eps_curves(sub, []).values():
                curves[f"best configuration, reproduced ({run}, n={sub['seed'].nunique()} seeds)"] = v
    else:
        notes += ["No `search reproduce` of this search yet: bands need distinct seeds "
                  "(`search export`, then `search reproduce --seeds 0 1 2`).", ""]
    eps_bands(curves, ctx.out / "regnet_eps.png")
    return ["### FGSM eps curves", "", "![plain accuracy under FGSM vs eps, bands over distinct seeds](regnet_eps.png)",
            "", *notes,
            "FGSM uses the cross-entropy of the scores; with a large mu_T its gradient underflows (masking): "
            f"read `{INDEP_APGD_DLR}` and `{GRADIENT_MASKING}` in the robustness table before reading a flat curve "
            "as robustness.", ""]


def _best_model_sections(ctx: ReportContext) -> list[str]:
    from trainables.core import DatasetNotFound

    from . import embedding

    with tempfile.TemporaryDirectory() as d:
        ckpt = records.download_checkpoint(ctx.info, d, ctx.client)
        if ckpt is None:
            return ctx.skip("RegNet latent plots", "no best_model checkpoint on the search run")
        try:
            model, cfg, split = embedding.from_checkpoint(ckpt, "test")
        except DatasetNotFound as e:
            return ctx.skip("RegNet latent plots", f"the dataset is not available here ({str(e).splitlines()[0]})")
    return model_sections(model, cfg, split, ctx.out, ctx.log, f"trial {ctx.info.best_trial}")


def model_sections(model, cfg, split, out: Path, log=print, label: str = "") -> list[str]:
    """Histograms against the target density (with RMSE) and, for d = 3, the 3-D latent scatter clean and under
    FGSM 0.1 / 0.3, for a Gaussian-head model on (up to 2000 samples of) ``split``; nothing for other heads."""
    from trainables.core.attacks import fgsm

    from . import embedding

    if getattr(cfg, "head", "linear") != "gaussian":
        return []
    split = embedding.subsample(split, 2000)
    model.eval()
    with torch.no_grad():
        z = model.outputs(split.x).latent
    path, rmse = latent_histograms(z, split.y, cfg.mu_t, cfg.sigma_t, out / "regnet_histograms.png")
    md = [f"Test latents of {label or 'the best model'}, own axis per class, against N(mu_T, sigma_T): mean "
          f"histogram RMSE {np.nanmean(rmse):.4f}.", "", f"![histograms]({path.name})", ""]
    if z.shape[1] == 3:
        log("3-D latent scatter of the three-class model (clean, FGSM 0.1, 0.3)")
        lat = {"clean": (z, split.y)}
        for eps in (0.1, 0.3):
            with torch.no_grad():
                lat[f"FGSM eps {eps}"] = (model.outputs(fgsm(model, split.x, split.y, eps=eps)).latent, split.y)
        latent_scatter(lat, cfg.mu_t, out / "regnet_latent3d.png", title=label)
        md += ["![3-D latent space, clean and under FGSM](regnet_latent3d.png)", ""]
    return md


__all__ = ["metric_vs_param", "eps_bands", "grouped_eps_curves", "eps_points", "latent_scatter",
           "latent_histograms", "sections", "model_sections", "plain_columns", "GAUSSIANITY_METRICS"]
