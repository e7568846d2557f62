"""What the diagnostics of a trained model need, gathered once from the model: scores, features, attacked samples.

The diagnostics themselves (confusion, per-class accuracy, P/R/F1, top-k, ECE, risk-coverage,
plots, UMAP) live in ``analysis.diagnostics``, above the core; a trial saves this dict
(``torch.save``, loadable with ``weights_only=True``) beside its checkpoint, so the best
trial's copy reaches MLflow with its weights and the report draws from it.
"""

from __future__ import annotations

import contextlib
from functools import partial

import torch

from .attacks import eval_mode, fgsm, pgd, random_noise, robust_accuracy
from .data import Split
from .domain_names import parse_name

GRID_SAMPLES = 8
PGD_SWEEP = (1, 2, 4, 7, 10)  # PGD iterations of the accuracy-vs-iterations curve: where it flattens
SWEEP_SAMPLES = 500
FEATURE_SAMPLES = 300  # per domain, for the UMAP by class and by domain


@torch.inference_mode()
def scores_and_features(model: torch.nn.Module, split: Split, batch_size: int = 1024, autocast=None):
    scores, feats = [], []
    with eval_mode(model):
        for i in range(0, len(split), batch_size):
            with autocast or contextlib.nullcontext():
                f = model.features(split.x[i : i + batch_size])
                s = model.head(f)
            scores.append(s.float().cpu())
            feats.append(f.float().cpu())
    return torch.cat(scores), torch.cat(feats)


def collect(model: torch.nn.Module, domains: dict[str, Split], *, eps: float, pgd_steps: int = 10,
            pgd_step_size: float | None = None, seed: int = 0, batch_size: int = 1024) -> dict:
    """``domains``: name -> split (the first is the source). Scores and labels of every sample; features of
    ``FEATURE_SAMPLES`` per domain; the first ``GRID_SAMPLES`` source samples clean, FGSM, PGD and noisy at
    ``eps`` with the model's predictions; PGD accuracy at ``eps`` for 1, 2, 4, 7 and 10 steps (first 500 source
    samples, a sample counting when correct clean and attacked)."""
    out = {"domains": {}, "eps": float(eps)}
    g = torch.Generator().manual_seed(seed)
    for name, split in domains.items():
        scores, feats = scores_and_features(model, split, batch_size)
        pick = torch.randperm(len(split), generator=g)[:FEATURE_SAMPLES]
        out["domains"][parse_name(name).canonical] = {
            "scores": scores, "labels": split.y.cpu(), "features": feats[pick].half(), "feature_labels": split.y.cpu()[pick],
        }
    source = next(iter(domains.values()))
    x, y = source.x[:GRID_SAMPLES], source.y[:GRID_SAMPLES]
    gen = torch.Generator(device=x.device).manual_seed(seed)
    images = {"clean": x, "fgsm": fgsm(model, x, y, eps), "pgd": pgd(model, x, y, eps, steps=pgd_steps,
                                                                          step_size=pgd_step_size, generator=gen),
              "noise": random_noise(x, eps, gen)}
    with torch.no_grad(), eval_mode(model):
        preds = {k: model(v).argmax(1).cpu() for k, v in images.items()}
    out["grid"] = {"images": {k: v.cpu() for k, v in images.items()}, "labels": y.cpu(), "preds": preds}
    xs, ys = source.x[:SWEEP_SAMPLES], source.y[:SWEEP_SAMPLES]
    out["pgd_sweep"] = {steps: robust_accuracy(model, (xs, ys), partial(pgd, eps=eps, steps=steps,
                                                                         step_size=pgd_step_size, generator=gen),
                                               batch_size) for steps in PGD_SWEEP}
    return out
