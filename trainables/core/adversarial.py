"""Adversarial training modes and the robust evaluation the training loop reports.

``make_batch_loss`` turns a config into ``batch_loss(x, y, epoch) -> (loss, logits)``:

- ``none``: clean training.
- ``fgsm_rs``: Wong et al., "Fast is better than free": a uniform random start in the eps
  ball, one signed step of 1.25 eps, projection.
- ``pgd``: Madry et al.'s PGD-AT, ``adv_steps`` steps from a random start.
- ``gairat``: Zhang et al. 2021, PGD-AT whose per-sample losses are weighted by how close
  each example sits to the decision boundary (``gairat_weights``), after ``gairat_burn_in``
  epochs of plain PGD-AT.

Examples are crafted in eval mode (see ``attacks``) and the model then trains on them in
whatever mode the loop put it in. The loss is ``adv_beta * adversarial + (1 - adv_beta) *
clean``; when both terms are needed, clean and adversarial images go through the model in
one batch (one forward, one set of BatchNorm statistics). The returned logits are those of
the adversarial images, so the loop's train accuracy is the adversarial train accuracy.
Random starts use the global RNG, which the trainer seeds and checkpoints.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from .attacks import eps_tag, eval_mode, fgsm, pgd, pgd_with_kappa, random_noise, robust_correct
from .config import TrainConfig

BatchLoss = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def gairat_weights(kappa: torch.Tensor, steps: int, lam: float, normalize: bool = True) -> torch.Tensor:
    """GAIRAT's weights: omega = (1 + tanh(lam + 5 (1 - 2 kappa / K))) / 2.

    Examples the attack flips early (small kappa, close to the boundary) weigh most. With
    ``normalize`` the weights are rescaled to mean 1, so the loss scale (and so the learning
    rate) stays comparable with unweighted PGD-AT. Computed as the equal sigmoid(2 z), which
    keeps the tiny weights of far-from-boundary examples exact where 1 + tanh(z) cancels.
    """
    omega = torch.sigmoid(2 * (lam + 5 * (1 - 2 * kappa.float() / steps)))
    if normalize:
        omega = omega * (len(omega) / omega.sum())
    return omega


def adv_step_size(cfg: TrainConfig) -> float:
    """The configured step, or the mode's default (1.25 eps for FGSM-RS, 2.5 eps / steps for PGD)."""
    if cfg.adv_step_size is not None:
        return cfg.adv_step_size
    return 1.25 * cfg.adv_eps if cfg.adv_mode == "fgsm_rs" else 2.5 * cfg.adv_eps / cfg.adv_steps


def make_batch_loss(cfg: TrainConfig, model: torch.nn.Module, loss_fn, generator=None) -> BatchLoss:
    """Returns ``batch_loss(x, y, epoch) -> (scalar loss, logits)`` for the configured training mode.

    ``epoch`` is the number of epochs completed (GAIRAT's burn-in needs it). ``loss_fn``
    returns per-sample losses.
    """
    beta = cfg.adv_beta

    def clean(x, y, epoch):
        logits = model(x)
        return loss_fn(logits.float(), y).mean(), logits

    if cfg.adv_mode == "none" or beta == 0:
        return clean

    eps, steps, step = cfg.adv_eps, cfg.adv_steps, adv_step_size(cfg)

    def combine(x, x_adv, y, weights=None):
        n = len(y)
        logits = model(torch.cat([x_adv, x]) if beta < 1 else x_adv)
        adv_logits = logits[:n]
        adv = loss_fn(adv_logits.float(), y)
        loss = (adv * weights).mean() if weights is not None else adv.mean()
        if beta < 1:
            loss = beta * loss + (1 - beta) * loss_fn(logits[n:].float(), y).mean()
        return loss, adv_logits

    if cfg.adv_mode == "fgsm_rs":
        def fgsm_rs(x, y, epoch):
            return combine(x, fgsm(model, x, y, eps, random_start=True, step_size=step, generator=generator), y)

        return fgsm_rs

    if cfg.adv_mode == "pgd":
        def pgd_at(x, y, epoch):
            return combine(x, pgd(model, x, y, eps, steps=steps, step_size=step, generator=generator), y)

        return pgd_at

    if cfg.adv_mode == "gairat":
        def gairat(x, y, epoch):
            x_adv, kappa = pgd_with_kappa(model, x, y, eps, steps=steps, step_size=step, generator=generator)
            weights = gairat_weights(kappa, steps, cfg.gairat_lambda) if epoch >= cfg.gairat_burn_in else None
            return combine(x, x_adv, y, weights)

        return gairat

    raise ValueError(f"unknown adv_mode '{cfg.adv_mode}'")


def metric_name(attack: str, eps: float) -> str:
    """``pgd_acc_eps0.1``: MLflow metric names allow no ``@``; must match ``families.robust_metric_names``."""
    return f"{attack}_acc_eps{eps_tag(eps)}"


def robust_metrics(model: torch.nn.Module, split, cfg: TrainConfig) -> dict[str, float]:
    """Clean, FGSM, PGD-``eval_pgd_steps`` and uniform-noise accuracy on the first ``eval_samples``.

    Names: ``clean_acc`` and ``{fgsm,pgd,noise}_acc_eps{eps_tag(eps)}``. A sample counts only if
    it is classified correctly clean and perturbed (see ``robust_accuracy``), so the clean
    pass runs once and the attacks only see the correctly classified samples. Random starts
    and noise come from a generator seeded by ``cfg.seed``: the numbers are reproducible and
    the training RNG is untouched.
    """
    x, y = split.x[: cfg.eval_samples], split.y[: cfg.eval_samples]
    n, bs = max(1, len(y)), cfg.eval_batch_size
    gen = torch.Generator(device=x.device).manual_seed(cfg.seed)
    with torch.no_grad(), eval_mode(model):
        ok = torch.cat([model(x[i : i + bs]).argmax(1) == y[i : i + bs] for i in range(0, len(y), bs)])
    x, y = x[ok], y[ok]
    out = {"clean_acc": len(y) / n}
    attacks = {
        "fgsm": lambda eps: partial(fgsm, eps=eps),
        "pgd": lambda eps: partial(pgd, eps=eps, steps=cfg.eval_pgd_steps, generator=gen),
        "noise": lambda eps: lambda m, a, b: random_noise(a, eps, gen),
    }
    for eps in cfg.eval_eps:
        for name, make in attacks.items():
            kept = robust_correct(model, (x, y), make(eps), bs) if eps > 0 and len(y) else len(y)
            out[metric_name(name, eps)] = kept / n
    return out


__all__ = ["make_batch_loss", "robust_metrics", "metric_name", "gairat_weights", "adv_step_size", "BatchLoss"]
