"""Adversarial training modes and the robust evaluation the training loop reports.

Each mode is registered (``@register("adv_mode", name)``) as a builder
``(model, loss_fn, generator=None, *, <config fields>) -> step(x, y, epoch) -> (loss, StepOutput)``:

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
one batch (one forward, one set of BatchNorm statistics). The returned outputs are those of
the adversarial images, so the loop's train accuracy is the adversarial train accuracy.
Random starts use the trainer's generator when given, else the global RNG (which the trainer
runs from its own checkpointed state during an epoch).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch

from .attacks import (
    LatentOutput,
    eval_mode,
    fgsm,
    margin_loss,
    pgd,
    pgd_with_kappa,
    random_noise,
    robust_correct,
)
from .metric_names import CLEAN_ACC, robust_metric_name, robust_metric_names
from .models import StepOutput
from .registry import build, declare, register
from .steps import attack_step

StepFn = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, StepOutput]]
BatchLoss = StepFn  # the older name


def outputs(model: torch.nn.Module, x: torch.Tensor) -> StepOutput:
    """``model.outputs(x)`` for a ``Network``; any other module's output serves as scores, features and latent."""
    if hasattr(model, "outputs"):
        return model.outputs(x)
    s = model(x)
    return StepOutput(s, s, s)


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


def _clean(model, loss_fn) -> StepFn:
    def clean(x, y, epoch):
        out = outputs(model, x)
        return loss_fn(out.scores.float(), y).mean(), out

    return clean


def _combine(model, loss_fn, beta: float):
    """``beta * adversarial + (1 - beta) * clean``, both halves through the model in one forward."""

    def combine(x, x_adv, y, weights=None):
        n = len(y)
        full = outputs(model, torch.cat([x_adv, x]) if beta < 1 else x_adv)
        out = StepOutput(full.scores[:n], full.features[:n], full.latent[:n])
        adv = loss_fn(out.scores.float(), y)
        loss = (adv * weights).mean() if weights is not None else adv.mean()
        if beta < 1:
            loss = beta * loss + (1 - beta) * loss_fn(full.scores[n:].float(), y).mean()
        return loss, out

    return combine


@register("adv_mode", "none")
def no_adversary(model, loss_fn, generator=None) -> StepFn:
    return _clean(model, loss_fn)


def _sometimes(adv_step: StepFn, clean_step: StepFn, prob: float, generator=None) -> StepFn:
    """Mixed training: each batch is adversarial with probability ``prob``, else clean (``prob`` 1: always)."""
    if prob >= 1:
        return adv_step

    def step(x, y, epoch):
        take = torch.rand((), generator=generator).item() < prob
        return adv_step(x, y, epoch) if take else clean_step(x, y, epoch)

    return step


@register("adv_mode", "fgsm")
def fgsm_plain(model, loss_fn, generator=None, *, adv_eps: float, adv_beta: float, adv_prob: float) -> StepFn:
    """Goodfellow et al.'s FGSM training: no random start, one signed step of eps."""
    if adv_beta == 0:
        return _clean(model, loss_fn)
    combine, step = _combine(model, loss_fn, adv_beta), attack_step("fgsm", adv_eps)

    def fgsm_step(x, y, epoch):
        return combine(x, fgsm(model, x, y, adv_eps, random_start=False, step_size=step), y)

    return _sometimes(fgsm_step, _clean(model, loss_fn), adv_prob, generator)


@register("adv_mode", "fgsm_rs")
def fgsm_rs(model, loss_fn, generator=None, *, adv_eps: float, adv_step_size: float | None,
            adv_beta: float, adv_prob: float) -> StepFn:
    if adv_beta == 0:
        return _clean(model, loss_fn)
    combine, step = _combine(model, loss_fn, adv_beta), attack_step("fgsm_rs", adv_eps, 1, adv_step_size)

    def fgsm_rs_step(x, y, epoch):
        return combine(x, fgsm(model, x, y, adv_eps, random_start=True, step_size=step, generator=generator), y)

    return _sometimes(fgsm_rs_step, _clean(model, loss_fn), adv_prob, generator)


# Where PGD-AT and GA-PGD start: ``random`` (a uniform point of the eps ball: Madry et al.'s PGD-AT and the
# official GAIRAT code, which produced GAIRAT's published numbers; the default) or ``input`` (x itself, as the
# GAIRAT paper's Algorithm 1 and seed 004 print it).
PGD_STARTS = declare("pgd_start", {"random": True, "input": False})  # name -> random start?


@register("adv_mode", "pgd")
def pgd_at(model, loss_fn, generator=None, *, adv_eps: float, adv_steps: int, adv_step_size: float | None,
           adv_beta: float, adv_prob: float, pgd_start: str) -> StepFn:
    if adv_beta == 0:
        return _clean(model, loss_fn)
    combine, step = _combine(model, loss_fn, adv_beta), attack_step("pgd", adv_eps, adv_steps, adv_step_size)
    random_start = PGD_STARTS[pgd_start]

    def pgd_step(x, y, epoch):
        x_adv = pgd(model, x, y, adv_eps, steps=adv_steps, step_size=step, random_start=random_start,
                    generator=generator)
        return combine(x, x_adv, y)

    return _sometimes(pgd_step, _clean(model, loss_fn), adv_prob, generator)


@register("adv_mode", "gairat")
def gairat(model, loss_fn, generator=None, *, adv_eps: float, adv_steps: int, adv_step_size: float | None,
           adv_beta: float, adv_prob: float, gairat_lambda: float, gairat_burn_in: int, pgd_start: str) -> StepFn:
    if adv_beta == 0:
        return _clean(model, loss_fn)
    combine = _combine(model, loss_fn, adv_beta)
    step = attack_step("pgd", adv_eps, adv_steps, adv_step_size)
    random_start = PGD_STARTS[pgd_start]

    def gairat_step(x, y, epoch):
        x_adv, kappa = pgd_with_kappa(model, x, y, adv_eps, steps=adv_steps, step_size=step,
                                      random_start=random_start, generator=generator)
        weights = gairat_weights(kappa, adv_steps, gairat_lambda) if epoch >= gairat_burn_in else None
        return combine(x, x_adv, y, weights)

    return _sometimes(gairat_step, _clean(model, loss_fn), adv_prob, generator)


def make_batch_loss(cfg, model: torch.nn.Module, loss_fn, generator=None) -> StepFn:
    """``step(x, y, epoch) -> (scalar per-sample loss mean, StepOutput)`` for ``cfg.adv_mode``.

    ``epoch`` is the number of epochs completed (GAIRAT's burn-in needs it). ``loss_fn``
    returns per-sample losses. The StepOutput is that of the images trained on (adversarial
    ones under an adversarial mode), so batch-level terms and train accuracy see them.
    """
    return build("adv_mode", cfg.adv_mode, cfg, model, loss_fn, generator)


def robust_metrics(model: torch.nn.Module, split, cfg: Any) -> dict[str, float]:
    """``RobustEval`` with the config's ``eval_*`` fields, on ``split``."""
    return RobustEval(tuple(cfg.eval_eps), cfg.eval_pgd_steps, cfg.eval_samples, cfg.eval_batch_size,
                      cfg.seed, getattr(cfg, "eval_pgd_step_size", None),
                      getattr(cfg, "fgsm_loss", DEFAULT_FGSM_LOSS)).measure(model, split)


def _training_loss_fgsm(model, x, y, eps):
    """FGSM on the loss the model was trained on, for the whole batch at once: a Gaussian head's L_TOT (the
    RegNet thesis's eq. 2.6, a batch-level loss of the latents), else the cross-entropy of the scores."""
    head = getattr(model, "head", None)
    if hasattr(head, "training_loss"):
        return fgsm(LatentOutput(model), x, y, eps, loss_fn=head.training_loss)
    return fgsm(model, x, y, eps)


# What the evaluation FGSM differentiates (``fgsm_loss``): fn(model, x, y, eps) -> x_adv.
FGSM_LOSSES = declare("fgsm_loss", {
    "ce": lambda model, x, y, eps: fgsm(model, x, y, eps),
    "margin": lambda model, x, y, eps: fgsm(model, x, y, eps, loss_fn=margin_loss),
    "training": _training_loss_fgsm,
})
DEFAULT_FGSM_LOSS = "ce"


@dataclass(frozen=True)
class RobustEval:
    """A per-epoch evaluator: robust accuracy of the model the run reports (``trainer.eval_model()``)."""

    eval_eps: tuple[float, ...]
    eval_pgd_steps: int
    eval_samples: int
    batch_size: int
    seed: int
    pgd_step_size: float | None = None  # None: PGD's default (``attack_step``)
    fgsm_loss: str = DEFAULT_FGSM_LOSS  # a key of FGSM_LOSSES

    @staticmethod
    def metric_names(eval_eps) -> tuple[str, ...]:
        """What ``measure`` reports for these eps values (the family's metrics ask this)."""
        return robust_metric_names(eval_eps)

    def __call__(self, trainer) -> dict[str, float]:
        return self.measure(trainer.eval_model(), trainer.data.val)

    def measure(self, model: torch.nn.Module, split) -> dict[str, float]:
        """Clean, FGSM, PGD-``eval_pgd_steps`` and uniform-noise accuracy on the first ``eval_samples``.

        Names: ``clean_acc`` and ``{fgsm,pgd,noise}_acc_eps{eps_tag(eps)}``. A sample counts only if
        it is classified correctly clean and perturbed (see ``robust_accuracy``), so the clean
        pass runs once and the attacks only see the correctly classified samples. FGSM differentiates
        ``FGSM_LOSSES[self.fgsm_loss]``. Beside them,
        ``fgsm_plain_acc_eps{eps_tag(eps)}`` is the plain accuracy on the FGSM images (every sample
        counts, a wrong one that FGSM turns right too): the RegNet thesis's measure. Random starts
        and noise come from a generator seeded by ``self.seed``: the numbers are reproducible and
        the training RNG is untouched.
        """
        x, y = split.x[: self.eval_samples], split.y[: self.eval_samples]
        n, bs = max(1, len(y)), self.batch_size
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        with torch.no_grad(), eval_mode(model):
            ok = torch.cat([model(x[i : i + bs]).argmax(1) == y[i : i + bs] for i in range(0, len(y), bs)])
        wrong = (x[~ok], y[~ok])
        x, y = x[ok], y[ok]
        out = {CLEAN_ACC: len(y) / n}
        fgsm_attack = FGSM_LOSSES[self.fgsm_loss]
        attacks = {
            "fgsm": lambda eps: partial(fgsm_attack, eps=eps),
            "pgd": lambda eps: partial(pgd, eps=eps, steps=self.eval_pgd_steps, step_size=self.pgd_step_size,
                                       generator=gen),
            "noise": lambda eps: lambda m, a, b: random_noise(a, eps, gen),
        }
        for eps in self.eval_eps:
            for name, make in attacks.items():
                kept = robust_correct(model, (x, y), make(eps), bs) if eps > 0 and len(y) else len(y)
                out[robust_metric_name(name, eps)] = kept / n
                if name == "fgsm":  # plain: every sample, as the RegNet thesis reports (a wrong one may turn right)
                    right = _turned_right(model, *wrong, partial(fgsm_attack, eps=eps), bs) if eps > 0 else 0
                    out[robust_metric_name("fgsm_plain", eps)] = (kept + right) / n
        return out


def _turned_right(model, x, y, attack, batch_size: int) -> int:
    """How many misclassified samples ``attack(model, x, y)`` makes correctly classified."""
    right = 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = attack(model, xb, yb)
        with torch.no_grad(), eval_mode(model):
            right += int((model(x_adv).argmax(1) == yb).sum())
    return right


# ---------------------------------------------------------------- the robust_eval switch (eval_eps set or not)
Evaluator = Callable[[Any], dict[str, float]]


@register("robust_eval", "on")
def robust_eval_on(batch_size: int, seed: int, *, eval_eps: tuple[float, ...], eval_pgd_steps: int,
                   eval_samples: int, eval_pgd_step_size: float | None, fgsm_loss: str) -> RobustEval:
    return RobustEval(tuple(eval_eps), eval_pgd_steps, eval_samples, batch_size, seed, eval_pgd_step_size, fgsm_loss)


@register("robust_eval", "off")
def robust_eval_off(batch_size: int, seed: int) -> None:
    return None


__all__ = ["make_batch_loss", "outputs", "RobustEval", "StepFn", "robust_metrics", "gairat_weights",
           "BatchLoss", "FGSM_LOSSES", "DEFAULT_FGSM_LOSS", "PGD_STARTS"]
