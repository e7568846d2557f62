"""Calibration of a classifier: expected calibration error (ECE) and a reliability diagram.

Pure torch + numpy. Confidence is the top softmax probability; samples are binned on
equal-width confidence bins ``(lo, hi]``, and ECE = sum_b |B_b|/n * |accuracy(B_b) - confidence(B_b)|.
A label-smoothed or adversarially trained model can be accurate yet under-confident:
accuracy alone does not show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .plots import _figure, _save


@dataclass
class Calibration:
    ece: float
    accuracy: float
    confidence: float  # mean top-1 confidence
    bins: pd.DataFrame  # lo, hi, count, accuracy, confidence (empty bins: count 0, NaN)
    path: Path | None = None


@torch.inference_mode()
def confidences(model: torch.nn.Module, split, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 softmax confidence and correctness of every sample of a split (``.x``, ``.y``)."""
    was_training = model.training
    model.eval()
    conf, correct = [], []
    for i in range(0, len(split.y), batch_size):
        probs = torch.softmax(model(split.x[i : i + batch_size]).float(), dim=1)
        p, pred = probs.max(dim=1)
        conf.append(p.cpu())
        correct.append((pred == split.y[i : i + batch_size]).cpu())
    model.train(was_training)
    return torch.cat(conf).numpy().astype(np.float64), torch.cat(correct).numpy()


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> tuple[float, pd.DataFrame]:
    """ECE over ``n_bins`` equal-width bins, and the per-bin table behind it."""
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    if len(conf) == 0:
        raise ValueError("no samples: calibration needs at least one prediction")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # bin (lo, hi]
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
    gaps = np.where(count > 0, np.abs(acc - mean_conf), 0.0)
    ece = float((count / len(conf) * gaps).sum())
    bins = pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "count": count, "accuracy": acc, "confidence": mean_conf})
    return ece, bins


def reliability_diagram(result: Calibration, out: str | Path, title: str = "") -> Path:
    """Accuracy per confidence bin against the diagonal, with the sample count per bin below."""
    fig = _figure(5.0, 5.6)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    b = result.bins
    width = float(b["hi"].iloc[0] - b["lo"].iloc[0])
    centers = (b["lo"] + b["hi"]).to_numpy() / 2
    filled = b["count"].to_numpy() > 0
    top.bar(centers[filled], b["accuracy"][filled], width=width * 0.95, color="tab:blue", label="accuracy")
    top.scatter(centers[filled], b["confidence"][filled], marker="_", s=300, linewidths=2, color="tab:red", zorder=3,
                label="mean confidence")
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize="small")
    top.set_title(title or f"reliability: ECE {result.ece:.3f}, accuracy {result.accuracy:.3f}")
    bottom.bar(centers, b["count"], width=width * 0.95, color="grey")
    bottom.set_yscale("symlog")
    bottom.set_xlabel("confidence (top-1 softmax)")
    bottom.set_ylabel("samples")
    return _save(fig, out)


def calibration(model: torch.nn.Module, split, out: str | Path | None = None, *, n_bins: int = 15,
                title: str = "") -> Calibration:
    """ECE of ``model`` on ``split``; with ``out``, also the reliability diagram PNG there."""
    conf, correct = confidences(model, split)
    ece, bins = expected_calibration_error(conf, correct, n_bins)
    result = Calibration(ece=ece, accuracy=float(correct.mean()), confidence=float(conf.mean()), bins=bins)
    if out is not None:
        result.path = reliability_diagram(result, out, title)
    return result
