"""Diagnostics of one trained classifier: where it errs, how sure it is, what it can abstain on.

Pure numpy / torch + scikit-learn's metrics; inputs are the model's scores (N, K) and the labels.
Accuracy alone hides per-class failure (confusion, per-class accuracy, macro P/R/F1), near misses
(top-k), miscalibration (ECE, reused from ``calibration``) and the value of abstaining
(risk-coverage: AURC and selective accuracy at 80 % / 90 % coverage). Plots go through the
Agg canvas like ``plots``. The image grid shows clean / FGSM / PGD / noise inputs side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from sklearn.metrics import confusion_matrix as _sk_confusion
from sklearn.metrics import precision_recall_fscore_support

from .calibration import expected_calibration_error
from .plots import _figure, _save

TOPK = (1, 2, 3, 5)
COVERAGES = (0.8, 0.9)


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _probs(scores) -> np.ndarray:
    s = torch.as_tensor(_np(scores), dtype=torch.float64)
    return torch.softmax(s, dim=1).numpy()


def confusion(labels, preds, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    return _sk_confusion(_np(labels), _np(preds), labels=np.arange(num_classes))


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class (NaN for a class absent from the labels)."""
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def macro_prf(labels, preds, num_classes: int) -> tuple[float, float, float]:
    """Macro precision, recall, F1 over the K classes (a class never predicted has precision 0)."""
    p, r, f, _ = precision_recall_fscore_support(_np(labels), _np(preds), labels=np.arange(num_classes),
                                                 average="macro", zero_division=0)
    return float(p), float(r), float(f)


def topk_accuracy(scores, labels, ks: Sequence[int] = TOPK) -> dict[int, float]:
    """Fraction of samples whose label is among the k highest scores; k >= K counts every sample."""
    s, y = _np(scores), _np(labels)
    order = np.argsort(-s, axis=1, kind="stable")
    out = {}
    for k in ks:
        hit = (order[:, : min(k, s.shape[1])] == y[:, None]).any(1)
        out[int(k)] = float(hit.mean())
    return out


@dataclass
class RiskCoverage:
    coverage: np.ndarray  # i / n for i = 1..n: the most confident i samples are answered
    risk: np.ndarray  # error rate among those i
    aurc: float  # area under the risk-coverage curve (mean risk over the n coverage levels)
    selective_acc: dict[float, float] = field(default_factory=dict)  # coverage -> accuracy on the answered


def risk_coverage(confidence, correct, coverages: Sequence[float] = COVERAGES) -> RiskCoverage:
    """Answer the most confident samples first; at coverage c the ceil(c n) most confident are answered."""
    conf, ok = _np(confidence).astype(np.float64), _np(correct).astype(np.float64)
    n = len(conf)
    if n == 0:
        raise ValueError("no samples: a risk-coverage curve needs at least one prediction")
    order = np.argsort(-conf, kind="stable")
    errors = np.cumsum(1.0 - ok[order])
    answered = np.arange(1, n + 1)
    risk = errors / answered
    selective = {}
    for c in coverages:
        if not 0 < c <= 1:
            raise ValueError(f"coverage must be in (0, 1], got {c}")
        i = max(1, math.ceil(c * n - 1e-9))
        selective[float(c)] = float(1.0 - risk[i - 1])
    return RiskCoverage(answered / n, risk, float(risk.mean()), selective)


@dataclass
class Diagnostics:
    num_classes: int
    accuracy: float
    confusion: np.ndarray
    per_class_acc: np.ndarray
    precision: float
    recall: float
    f1: float
    topk: dict[int, float]
    ece: float
    ece_bins: int
    risk_coverage: RiskCoverage

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat scalar metrics (MLflow-safe names), e.g. ``macro_f1``, ``top3_acc``, ``sel_acc_cov90``."""
        m = {"acc": self.accuracy, "macro_precision": self.precision, "macro_recall": self.recall,
             "macro_f1": self.f1, f"ece_{self.ece_bins}bins": self.ece, "aurc": self.risk_coverage.aurc}
        m.update({f"top{k}_acc": v for k, v in self.topk.items()})
        m.update({f"sel_acc_cov{round(c * 100)}": v for c, v in self.risk_coverage.selective_acc.items()})
        m.update({f"class{c}_acc": float(a) for c, a in enumerate(self.per_class_acc) if not np.isnan(a)})
        return {f"{prefix}{k}": float(v) for k, v in m.items()}


def diagnose(scores, labels, *, n_bins: int = 10, ks: Sequence[int] = TOPK,
             coverages: Sequence[float] = COVERAGES) -> Diagnostics:
    """Every diagnostic of one model on one split, from its scores (N, K) and labels (N,).

    Confidence is the top softmax probability of the scores.
    """
    s, y = _np(scores), _np(labels).astype(np.int64)
    if s.ndim != 2 or len(s) != len(y):
        raise ValueError(f"scores must be (N, K) with N = len(labels); got {s.shape} and {y.shape}")
    k = s.shape[1]
    probs = _probs(s)
    pred, conf = probs.argmax(1), probs.max(1)
    correct = pred == y
    cm = confusion(y, pred, k)
    p, r, f = macro_prf(y, pred, k)
    ece, _ = expected_calibration_error(conf, correct, n_bins)
    return Diagnostics(k, float(correct.mean()), cm, per_class_accuracy(cm), p, r, f, topk_accuracy(s, y, ks),
                       ece, n_bins, risk_coverage(conf, correct, coverages))


# ------------------------------------------------------------------ plots
def confusion_plot(cm: np.ndarray, out: str | Path, *, class_names: Sequence[str] | None = None,
                   normalize: bool = True, title: str = "") -> Path:
    """Heat map of the confusion matrix (row-normalized by default), counts written in the cells."""
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    with np.errstate(invalid="ignore", divide="ignore"):
        shown = cm / cm.sum(1, keepdims=True) if normalize else cm.astype(float)
    shown = np.nan_to_num(shown)
    fig = _figure(1.2 + 0.45 * k, 1.0 + 0.42 * k)
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class" if normalize else "count")
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(k), names, fontsize="small")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        thresh = shown.max() / 2 if shown.max() > 0 else 0.5
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize="xx-small",
                        color="white" if shown[i, j] > thresh else "black")
    ax.set_title(title or f"confusion matrix (accuracy {np.trace(cm) / max(cm.sum(), 1):.3f})")
    return _save(fig, out)


def risk_coverage_plot(curves: Mapping[str, RiskCoverage] | RiskCoverage, out: str | Path, *, title: str = "") -> Path:
    """Risk against coverage, one line per model (AURC in the legend), 80 % / 90 % coverage marked."""
    if isinstance(curves, RiskCoverage):
        curves = {"model": curves}
    fig = _figure(5.6, 4.2)
    ax = fig.add_subplot()
    for label, rc in curves.items():
        ax.plot(rc.coverage, rc.risk, lw=1.5, label=f"{label} (AURC {rc.aurc:.4f})")
    for c in COVERAGES:
        ax.axvline(c, color="grey", ls=":", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (fraction answered, most confident first)")
    ax.set_ylabel("risk (error rate among answered)")
    ax.legend(fontsize="small")
    ax.set_title(title or "risk-coverage")
    return _save(fig, out)


def image_grid(images: Mapping[str, torch.Tensor], labels, preds: Mapping[str, object], out: str | Path, *,
               class_names: Sequence[str] | None = None, n: int = 8, title: str = "") -> Path:
    """Rows = inputs (``clean``, ``fgsm``, ``pgd``, ``noise``...), columns = samples; each titled true / pred.

    ``images[row]``: (N, C, H, W) in [0, 1]; ``preds[row]``: the model's predicted labels on that row.
    A wrong prediction is titled in red.
    """
    rows = list(images)
    missing = [r for r in rows if r not in preds]
    if missing:
        raise ValueError(f"no predictions for rows {missing}")
    y = _np(labels)
    n = min(n, len(y))
    name = (lambda c: class_names[int(c)]) if class_names is not None else (lambda c: str(int(c)))
    fig = _figure(1.25 * n + 0.8, 1.45 * len(rows) + 0.4)
    axes = np.atleast_2d(fig.subplots(len(rows), n, squeeze=False))
    for r, row in enumerate(rows):
        x, p = _np(images[row]), _np(preds[row])
        for j in range(n):
            ax = axes[r, j]
            img = x[j].transpose(1, 2, 0)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name(y[j])} / {name(p[j])}", fontsize="x-small", color="black" if p[j] == y[j] else "red")
            if j == 0:
                ax.set_ylabel(row, fontsize="small")
    fig.suptitle(title or "true / predicted", fontsize="small")
    return _save(fig, out)


def embedding_plot(xy: np.ndarray, labels, out: str | Path, *, domains: Sequence[str] | None = None,
                   title: str = "") -> Path:
    """A 2-D projection (UMAP) coloured by class; with ``domains`` (one name per point), a second panel by domain."""
    y = _np(labels)
    panels = 2 if domains is not None else 1
    fig = _figure(5.2 * panels, 4.8)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    ax.scatter(xy[:, 0], xy[:, 1], c=y, cmap="tab10" if y.max() < 10 else "tab20", s=5, alpha=0.8)
    ax.set_title("by class")
    if domains is not None:
        doms = np.asarray(domains)
        for d in dict.fromkeys(doms):
            sel = doms == d
            axes[1].scatter(xy[sel, 0], xy[sel, 1], s=5, alpha=0.6, label=str(d))
        axes[1].legend(fontsize="x-small", markerscale=2)
        axes[1].set_title("by domain")
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(title or "UMAP of penultimate features", fontsize="small")
    return _save(fig, out)


# ------------------------------------------------------------------ from a trial's saved predictions
def from_predictions(source, out: str | Path, *, n_bins: int = 10, umap: bool = True,
                     class_names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Every diagnostic from ``predictions.pt`` (``trainables.core.predictions.collect``) into ``out``.

    Per domain: the scalar diagnostics (returned, and written to ``diagnostics.json``), a confusion
    matrix; for all domains: one risk-coverage figure, the clean / FGSM / PGD / noise grid and, with
    ``umap``, the penultimate features by class and by domain.
    """
    import json

    data = torch.load(source, map_location="cpu", weights_only=True) if isinstance(source, (str, Path)) else source
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, curves = {}, {}
    for name, d in data["domains"].items():
        diag = diagnose(d["scores"], d["labels"], n_bins=n_bins)
        results[name] = diag.metrics()
        curves[name] = diag.risk_coverage
        safe = name.replace(":", "_").replace("@", "_")
        confusion_plot(diag.confusion, out / f"confusion_{safe}.png", class_names=class_names,
                       title=f"{name}: accuracy {diag.accuracy:.3f}")
    risk_coverage_plot(curves, out / "risk_coverage.png")
    grid = data["grid"]
    image_grid(grid["images"], grid["labels"], grid["preds"], out / "adversarial_grid.png", class_names=class_names,
               title=f"true / predicted: clean, FGSM, PGD, uniform noise at eps {data['eps']:.3g}")
    if "pgd_sweep" in data:
        results["pgd_sweep"] = {f"pgd{k}_acc": float(v) for k, v in data["pgd_sweep"].items()}
        fig = _figure(4.8, 3.4)
        ax = fig.add_subplot()
        steps = sorted(data["pgd_sweep"])
        ax.plot(steps, [data["pgd_sweep"][s] for s in steps], "o-", color="tab:red")
        ax.set_xlabel("PGD iterations")
        ax.set_ylabel(f"accuracy at eps {data['eps']:.3g}")
        ax.set_ylim(0, 1)
        ax.set_title("PGD-iterations sweep")
        _save(fig, out / "pgd_sweep.png")
    if umap:
        from .embedding import project

        feats = np.concatenate([d["features"].float().numpy() for d in data["domains"].values()])
        labels = np.concatenate([d["feature_labels"].numpy() for d in data["domains"].values()])
        domains = [n for n, d in data["domains"].items() for _ in range(len(d["feature_labels"]))]
        embedding_plot(project(feats), labels, out / "umap_class_domain.png", domains=domains)
    (out / "diagnostics.json").write_text(json.dumps(results, indent=1))
    return results


def predictions_from_checkpoint(path: str | Path, eps: float = 0.1) -> dict:
    """What ``predictions.pt`` holds, computed from a trainer checkpoint (e.g. a search's ``best_model/checkpoint.pt``,
    which is the best epoch's and may lack the last epoch's ``predictions.pt``): the source's test split and
    every ``eval_datasets`` target of the checkpoint's config, converted like the run converted them."""
    from trainables.core import load_data, load_model
    from trainables.core.predictions import collect

    model, cfg = load_model(path)
    kw = dict(data_dir=cfg.data_dir, split_seed=cfg.split_seed, classes=cfg.classes, class_groups=cfg.class_groups)
    source = load_data(cfg.dataset, channels=cfg.channels, size=cfg.image_size, **kw).test
    c, s = source.x.shape[1], source.x.shape[-1]
    domains = {cfg.dataset: source}
    for name in dict.fromkeys(cfg.eval_datasets):
        domains[name] = load_data(name, channels=c, size=s, **kw).test
    return collect(model, domains, eps=cfg.adv_eps or (max(cfg.eval_eps) if cfg.eval_eps else eps), seed=cfg.seed)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m analysis.diagnostics predictions.pt|checkpoint.pt OUT [--bins 10] [--no-umap]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m analysis.diagnostics", description=main.__doc__)
    ap.add_argument("predictions")
    ap.add_argument("out")
    ap.add_argument("--bins", type=int, default=10)
    ap.add_argument("--no-umap", action="store_true")
    args = ap.parse_args(argv)
    source = torch.load(args.predictions, map_location="cpu", weights_only=True)
    if "model" in source:  # a trainer checkpoint: compute its predictions first
        source = predictions_from_checkpoint(args.predictions)
    found = from_predictions(source, args.out, n_bins=args.bins, umap=not args.no_umap)
    for name, m in found.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if not k.startswith("class")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
