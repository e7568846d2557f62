"""RegNet sections of a search report: accuracy vs mu_T and F_k, FGSM eps curves with seed bands,
the 3-D latent space of a three-class model (clean and under FGSM), per-class histograms against the
target density, and kurtosis / skewness vs mu_T (issue 10).

The plotting functions take plain tables and tensors, so the benchmark and a notebook use them too;
``sections`` reads a search's trial table (and, when logged, its best weights) and returns Markdown.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .plots import _figure, _save

PLAIN_METRIC = re.compile(r"^fgsm_plain_acc_eps(\d+(?:\.\d+)?(?:e[+-]?\d+)?)$")


def _column(df: pd.DataFrame, fixed: Mapping[str, str], name: str):
    """A searched parameter's column, or its fixed value broadcast, or None."""
    if name in df:
        return df[name]
    if name in fixed:
        raw = fixed[name]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = raw
        return pd.Series([value] * len(df), index=df.index)
    return None


# ---------------------------------------------------------------- accuracy / moments vs a parameter
def metric_vs_param(df: pd.DataFrame, param: str, metrics: Sequence[str], out: str | Path, *,
                    group: pd.Series | None = None, baseline: pd.Series | None = None, log_x: bool = True,
                    title: str = "") -> Path:
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
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or f"{', '.join(metrics)} vs {param}")
    return _save(fig, out)


# ---------------------------------------------------------------- eps curves with seed bands
def eps_points(row: Mapping[str, float], pattern: re.Pattern = PLAIN_METRIC, clean: str = "clean_acc"):
    """(eps, acc) pairs from ``fgsm_plain_acc_eps<tag>`` metrics, with eps 0 = ``clean`` when not logged."""
    pts = {float(m.group(1)): float(v) for k, v in row.items() if (m := pattern.match(str(k))) and pd.notna(v)}
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
        ax.plot(eps, mean, marker="o", ms=3, label=label)
        ax.fill_between(eps, mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="FGSM eps (L-inf, pixel scale [0, 1])", ylabel=ylabel, ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or "accuracy under FGSM, mean +- std over seeds")
    return _save(fig, out)


def grouped_eps_curves(df: pd.DataFrame, keys: Sequence[str], max_groups: int = 5):
    """Trials grouped by ``keys`` (the searched parameters except the seed): ``{label: (eps, mean, std)}``."""
    cols = [c for c in df.columns if PLAIN_METRIC.match(str(c))]
    if not cols:
        return {}
    keys = [k for k in keys if k in df]
    grouped = df.groupby(keys, dropna=False, sort=False) if keys else [((), df)]
    curves = {}
    for key, sub in grouped:
        per_trial = [dict(eps_points(r)) for r in sub.to_dict("records")]
        eps = sorted(set().union(*per_trial))
        if not eps:
            continue
        vals = np.array([[p.get(e, np.nan) for e in eps] for p in per_trial], dtype=float)
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, key)) or "all trials"
        curves[f"{label} (n={len(sub)})"] = (eps, np.nanmean(vals, 0), np.nan_to_num(np.nanstd(vals, 0)))
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
    from trainables.core.regnet import hist_rmse

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
def sections(info, df: pd.DataFrame, out: Path, log: Callable[[str], None] = print, *,
             best_model: bool = True) -> list[str]:
    """Markdown (and PNGs in ``out``) for a ``regnet`` search: the issue 10 figures its records allow."""
    md = ["## RegNet", ""]
    fixed = info.fixed or {}
    head = _column(df, fixed, "head")
    is_ce = (head == "linear") if head is not None else pd.Series(False, index=df.index)
    loss = _column(df, fixed, "regnet_loss")
    obj = info.best_column
    work = df.copy()
    for p in ("mu_t", "kurtosis_factor"):
        col = _column(df, fixed, p)
        if col is not None:
            work[p] = pd.to_numeric(col, errors="coerce")
    acc = "test_acc" if "test_acc" in work and work["test_acc"].notna().any() else obj
    if "mu_t" in work and work.loc[~is_ce, "mu_t"].nunique() > 1:
        metric_vs_param(work, "mu_t", [acc], out / "regnet_acc_vs_mu.png", group=loss, baseline=is_ce,
                        title=f"{acc} vs mu_T (one curve per loss; dashed: cross-entropy)")
        md += [f"![{acc} vs mu_T](regnet_acc_vs_mu.png)", ""]
        moments = [m for m in ("val_kurtosis_mean", "val_skew_mean") if m in work]
        if moments:
            metric_vs_param(work, "mu_t", moments, out / "regnet_moments_vs_mu.png", baseline=is_ce,
                            title="kurtosis and skewness of the validation latents vs mu_T")
            md += ["![kurtosis and skewness vs mu_T](regnet_moments_vs_mu.png)", "",
                   "Kurtosis grows with mu_T even when the histograms look Gaussian (a few far points dominate): "
                   "read `val_hist_rmse` for Gaussianity.", ""]
    if "kurtosis_factor" in work and work.loc[~is_ce, "kurtosis_factor"].nunique() > 1:
        fk = work[work["kurtosis_factor"] > 0] if (work["kurtosis_factor"] > 0).any() else work
        metric_vs_param(fk, "kurtosis_factor", [acc], out / "regnet_acc_vs_fk.png",
                        group=_column(fk, fixed, "kurtosis_penalty"), baseline=is_ce.loc[fk.index],
                        title=f"{acc} vs F_k (F_k > 0 on a log axis)")
        md += [f"![{acc} vs F_k](regnet_acc_vs_fk.png)", ""]
    keys = [p for p in info.space if p != "seed"]
    curves = grouped_eps_curves(df, keys)
    if curves:
        eps_bands(curves, out / "regnet_eps.png")
        md += ["![plain accuracy under FGSM vs eps, seed bands](regnet_eps.png)", "",
               "FGSM uses the cross-entropy of the scores; with a large mu_T its gradient underflows (masking): "
               "compare the independent APGD check before reading a flat curve as robustness.", ""]
    if best_model:
        md += _best_model_sections(info, out, log)
    return md


def _best_model_sections(info, out: Path, log) -> list[str]:
    import records
    from trainables.core import DatasetNotFound

    from . import embedding

    with tempfile.TemporaryDirectory() as d:
        ckpt = records.download_checkpoint(info, d)
        if ckpt is None:
            return []
        try:
            model, cfg, split = embedding.from_checkpoint(ckpt, "test")
        except DatasetNotFound as e:
            return [f"Best-model latent plots skipped: {str(e).splitlines()[0]}", ""]
    return model_sections(model, cfg, split, out, log, f"trial {info.best_trial}")


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
           "latent_histograms", "sections", "model_sections"]
