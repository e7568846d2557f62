"""Ray Tune trainable for the generalization family: cross-domain accuracy every epoch, pretrain then
fine-tune (one monotonic step count), and the final model's predictions saved for the diagnostics.

At the last epoch it writes ``predictions.pt`` beside the checkpoint (``trainables.core.predictions``):
scores and labels on the source's test split and on every target's, features for the UMAP, and a
clean / FGSM / PGD / noise sample grid, a PGD-iterations sweep. ``best_model/`` in MLflow is the best
epoch's checkpoint (it holds this file when that epoch is the last); ``python -m analysis.diagnostics
predictions.pt|checkpoint.pt OUT`` draws every diagnostic from either.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainables.adapter import run_trial
from trainables.core import Trainer
from trainables.core.data import DataSpec, load
from trainables.core.predictions import collect

PREDICTIONS_FILE = "predictions.pt"
DEFAULT_GRID_EPS = 0.1


def grid_eps(cfg) -> float:
    """The attack strength of the sample grid: the training eps, else the largest evaluated one, else 0.1."""
    return cfg.adv_eps or (max(cfg.eval_eps) if cfg.eval_eps else DEFAULT_GRID_EPS)


def save_predictions(trainer: Trainer, folder: Path) -> Path:
    plan = getattr(trainer, "plan", trainer.cfg)  # a fine-tuning run's full config
    c, s, _ = trainer.data.shape
    domains = {plan.dataset: trainer.data.test}
    targets = list(plan.eval_datasets) + ([plan.finetune_dataset] if plan.finetune_dataset else [])
    for name in dict.fromkeys(targets):
        domains[name] = load(DataSpec.of(plan).target(name, c, s), trainer.device).test
    found = collect(trainer.eval_model(), domains, eps=grid_eps(plan), pgd_steps=plan.eval_pgd_steps,
                    pgd_step_size=plan.eval_pgd_step_size, seed=plan.seed, batch_size=plan.eval_batch_size)
    path = folder / PREDICTIONS_FILE
    torch.save(found, path)
    return path


def train_generalization(config: dict) -> None:
    run_trial(config, final_files=save_predictions)
