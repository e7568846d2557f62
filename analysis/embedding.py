"""A trained model's penultimate features, projected to 2-D with UMAP and colored by label.

Shows how well a model separates the classes in the representation its head sees. Kept
small: at most ``n`` (2000) samples and a modest number of optimization epochs. The first
UMAP call in a process spends ~10 s of CPU compiling umap-learn's numba kernels.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from trainables.core import load_model
from trainables.core.data import Split
from trainables.core.trainer import build_data

from .calibration import calibration
from .plots import _figure, _save

__all__ = ["from_checkpoint", "subsample", "features", "project", "projection", "umap_plot", "calibration",
           "numba_cache"]

SPLITS = ("train", "val", "test")


def from_checkpoint(path: str | Path, split: str = "test"):
    """``(model, config, split)`` from a checkpoint written by the trainer (weights only, on CPU)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    model, cfg = load_model(path, device="cpu")
    data = build_data(cfg, torch.device("cpu"))
    return model, cfg, getattr(data, split)


def subsample(split: Split, n: int, seed: int = 0) -> Split:
    if len(split) <= n:
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return Split(split.x[idx], split.y[idx])


@torch.inference_mode()
def features(model: torch.nn.Module, split: Split, batch_size: int = 512) -> np.ndarray:
    """``model.features`` (the penultimate layer) of every sample, in eval mode."""
    was_training = model.training
    model.eval()
    out = [model.features(split.x[i : i + batch_size]).flatten(1).float().cpu() for i in range(0, len(split), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy()


def numba_cache() -> str:
    """Where numba keeps umap-learn's compiled kernels (``NUMBA_CACHE_DIR``, which ``search report`` sets): with a
    writable cache the ~10 s compilation happens once per machine, not once per report."""
    return os.environ.get("NUMBA_CACHE_DIR") or "numba's default (__pycache__ beside umap-learn)"


def project(feats: np.ndarray, *, n_neighbors: int = 15, n_epochs: int = 200, seed: int = 0) -> np.ndarray:
    """UMAP to 2-D (seeded, so the picture is reproducible)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap-learn's notices about seeding and numba
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(n_neighbors, len(feats) - 1)), n_epochs=n_epochs,
                            min_dist=0.1, init="spectral" if len(feats) >= 100 else "random",
                            random_state=seed, n_jobs=1)
        return reducer.fit_transform(feats)


def projection(model: torch.nn.Module, split: Split, *, n: int = 2000, n_epochs: int = 200, seed: int = 0,
               stored: str | Path | None = None, key: str = "") -> tuple[np.ndarray, np.ndarray, bool]:
    """``(xy, labels, reused)``: the UMAP projection of ``model``'s features on ``split`` (≤ ``n`` samples).

    ``stored`` (an ``.npz`` this function wrote) is reused when its ``key`` (which model, which samples) and
    settings match, and (re)written otherwise: a report computes the projection once per best model.
    """
    settings = f"{key}|n={n}|epochs={n_epochs}|seed={seed}"
    if stored is not None and Path(stored).is_file():
        with np.load(stored, allow_pickle=False) as f:
            if str(f["settings"]) == settings:
                return f["xy"], f["labels"], True
    part = subsample(split, n, seed)
    if len(part) < 3:
        raise ValueError(f"UMAP needs at least 3 samples, got {len(part)}")
    xy, labels = project(features(model, part), n_epochs=n_epochs, seed=seed), part.y.cpu().numpy()
    if stored is not None:
        np.savez(stored, xy=xy, labels=labels, settings=np.array(settings))
    return xy, labels, False


def umap_plot(model: torch.nn.Module, split: Split, out: str | Path, *, n: int = 2000, n_epochs: int = 200,
              seed: int = 0, title: str = "", stored: str | Path | None = None, key: str = "") -> Path:
    """Scatter of the UMAP projection of ``model``'s features on ``split`` (≤ ``n`` samples), by label
    (``stored``/``key``: see ``projection``)."""
    xy, labels, _ = projection(model, split, n=n, n_epochs=n_epochs, seed=seed, stored=stored, key=key)
    fig = _figure(5.6, 5.0)
    ax = fig.add_subplot()
    classes = np.unique(labels)
    cmap = "tab10" if len(classes) <= 10 else "tab20"
    points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap=cmap, s=6, alpha=0.8, vmin=-0.5, vmax=max(9, labels.max()) + 0.5)
    if len(classes) <= 20:
        handles = [ax.scatter([], [], color=points.cmap(points.norm(c)), s=12, label=str(c)) for c in classes]
        ax.legend(handles=handles, title="label", fontsize="x-small", markerscale=1.5, loc="best", ncols=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"UMAP of penultimate features ({len(labels)} samples)")
    return _save(fig, out)
