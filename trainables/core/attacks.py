"""L-inf attacks in pixel space, batched.

Every ``Network`` takes pixels in [0, 1] and normalizes inside, so an attack only has to
respect two boxes: the eps ball around ``x`` and the image range [0, 1]. Both are folded
into one per-pixel interval ``[lo, hi]`` computed once, so each step is a single clamp.

Attacks run the model in eval mode (BatchNorm must use its running statistics, or the
perturbation of one image would depend on the rest of the batch) and restore every
module's mode afterwards. Gradients are taken with ``torch.autograd.grad`` with respect to
the input only, so nothing accumulates in the parameters' ``.grad``. They switch inference
mode off and grad on themselves and work on a clone of ``x``, so they can be called from
anywhere, even under ``torch.inference_mode()`` (the returned tensor is a normal tensor).
Random starts draw from ``generator`` when given (reproducible, leaves the global RNG alone)
and from the global RNG otherwise (what training uses, so checkpoints capture it).

On CPU the attack loop runs the model in channels_last (NHWC) through
``torch.func.functional_call`` with detached NHWC copies of the weights: oneDNN's max
pooling and BatchNorm backward are much faster in that layout (about 25% less time per PGD
step on the configurable CNN), and the caller's model is never modified.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .steps import attack_step

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for the duration; restores each module's own flag (not just the root's)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _grad_enabled():
    with torch.inference_mode(False), torch.enable_grad():
        yield


def uniform_like(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform noise in [-eps, eps] shaped like ``x``; a CPU generator also serves CUDA inputs."""
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
    return u.to(x.device).mul_(2 * eps).sub_(eps)


def _bounds(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)


def _attack_forward(model: nn.Module, x: torch.Tensor):
    """``(forward, x)`` for the attack loop: the same function of the input, in a faster layout.

    Detached weights also mean autograd never even considers the parameters' gradients.
    """
    if x.dim() != 4 or x.device.type != "cpu":
        return model, x
    params = {name: _nhwc(p.detach()) if p.dim() == 4 else p.detach() for name, p in model.named_parameters()}

    def forward(inp):
        return torch.func.functional_call(model, params, (inp,))

    return forward, _nhwc(x)


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    # Not t.contiguous(memory_format=...): with one channel that returns t unchanged, NCHW strides
    # and all, and oneDNN then keeps the whole first block in the slow layout.
    return torch.empty_like(t, memory_format=torch.channels_last).copy_(t)


def _ce_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # A sum, not a mean: the sign of the gradient is the same and it cannot underflow in bf16.
    return F.cross_entropy(logits.float(), y, reduction="sum")


def margin_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} s_j - s_y per sample: grows as the sample moves toward a wrong class and never saturates
    (the cross-entropy of scores as large as RegNet's at a large mu_T underflows to a zero gradient)."""
    s = scores.float()
    other = s.scatter(1, y[:, None], float("-inf")).amax(1)
    return other - s.gather(1, y[:, None]).squeeze(1)


class LatentOutput(nn.Module):
    """The network as a function of its input returning the head's latent (z of a Gaussian head), so an attack
    can differentiate a loss of the latent: the RegNet thesis's FGSM on its training loss."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.outputs(x).latent


def _run(model, x, y, eps, steps, step_size, random_start, loss_fn, targeted, generator, count_correct=False):
    """The PGD loop shared by every attack. Returns (x_adv, kappa or None).

    ``kappa`` counts, per sample, the iterates (random start included, final one excluded)
    that the model still classified as ``y``: GAIRAT's geometry value.
    """
    loss_fn = loss_fn or _ce_sum
    direction = -step_size if targeted else step_size
    y = y.clone()  # clones are normal tensors even if the inputs are inference tensors
    forward, xf = _attack_forward(model, x.detach().clone())
    lo, hi = _bounds(xf, eps)
    x_adv = xf + uniform_like(xf, eps, generator) if random_start else xf.clone()
    x_adv = torch.clamp(x_adv, lo, hi)
    kappa = torch.zeros(len(x), dtype=torch.long, device=x.device) if count_correct else None
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = forward(x_adv)
        if kappa is not None:
            kappa += logits.detach().argmax(1) == y
        loss = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(loss.sum() if loss.dim() else loss, x_adv)
        x_adv = x_adv.detach().add_(grad.sign_(), alpha=direction)
        x_adv.clamp_(lo, hi)
    return torch.empty_like(x).copy_(x_adv), kappa  # back in the caller's layout


def prefer(success: torch.Tensor, score: torch.Tensor, best_success: torch.Tensor,
           best_score: torch.Tensor) -> torch.Tensor:
    """Per sample, whether a new restart beats the kept one: success first, then the higher score."""
    return (success & ~best_success) | ((success == best_success) & (score > best_score))


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, random_start: bool = False,
         step_size: float | None = None, generator: torch.Generator | None = None,
         loss_fn: LossFn | None = None) -> torch.Tensor:
    """One signed-gradient step (Goodfellow et al.); with ``random_start``, Wong et al.'s FGSM-RS.

    The step defaults to eps, or to 1.25 eps with a random start (``attack_step``). ``loss_fn(outputs, y)``
    (per-sample or a batch scalar) replaces the cross-entropy of ``model``'s outputs.
    """
    if eps <= 0:
        return x.detach().clone()
    step = attack_step("fgsm_rs" if random_start else "fgsm", eps, 1, step_size)
    with _grad_enabled(), eval_mode(model):
        return _run(model, x, y, eps, 1, step, random_start, loss_fn, False, generator)[0]


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
        step_size: float | None = None, random_start: bool = True, restarts: int = 1, targeted: bool = False,
        target: torch.Tensor | None = None, loss_fn: LossFn | None = None,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent (Madry et al.); the step defaults to 2.5 eps / steps (``attack_step``).

    Targeted: moves towards ``target`` (required) by descending its loss. With several
    restarts, each sample keeps the restart that succeeds (misclassified, or hits the target);
    among equally (un)successful ones, the one with the higher cross-entropy (lower, towards
    the target, when targeted). ``loss_fn(logits,
    labels)`` may return per-sample losses or a scalar; the default is cross-entropy.
    """
    if targeted and target is None:
        raise ValueError("a targeted attack needs `target`")
    labels = target if targeted else y
    if eps <= 0:
        return x.detach().clone()
    step = attack_step("pgd", eps, steps, step_size)
    with _grad_enabled(), eval_mode(model):
        best = None
        for _ in range(restarts):
            x_adv = _run(model, x, labels, eps, steps, step, random_start, loss_fn, targeted, generator)[0]
            if restarts == 1:
                return x_adv
            with torch.no_grad():
                logits = model(x_adv).float()
                loss = F.cross_entropy(logits, labels, reduction="none")
                hit = logits.argmax(1) == labels
                success, score = (hit, -loss) if targeted else (~hit, loss)
            if best is None:
                best, best_success, best_score = x_adv, success, score
                continue
            take = prefer(success, score, best_success, best_score)
            best = torch.where(take.view(-1, *[1] * (x.dim() - 1)), x_adv, best)
            best_success, best_score = best_success | success, torch.where(take, score, best_score)
        return best


def pgd_with_kappa(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
                   step_size: float | None = None, random_start: bool = True,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Untargeted PGD that also returns GAIRAT's geometry value kappa (int64, in [0, steps]).

    Kappa is free: the loop computes the logits of each iterate anyway.
    """
    step = attack_step("pgd", eps, steps, step_size)
    with _grad_enabled(), eval_mode(model):
        return _run(model, x, y, eps, steps, step, random_start, None, False, generator, count_correct=True)


def random_noise(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform noise in the eps ball, clamped to [0, 1]: the baseline an attack must beat."""
    if eps <= 0:
        return x.detach().clone()
    return (x.detach() + uniform_like(x, eps, generator)).clamp_(0.0, 1.0)


def _as_xy(data) -> tuple[torch.Tensor, torch.Tensor]:
    return (data.x, data.y) if hasattr(data, "x") else data


def robust_correct(model: nn.Module, data, attack: Attack | None, batch_size: int = 1024) -> int:
    """How many samples stay correctly classified under ``attack``; see ``robust_accuracy``."""
    x, y = _as_xy(data)
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    with eval_mode(model):
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            with torch.no_grad():
                ok = model(xb).argmax(1) == yb
            if attack is not None and ok.any():
                xa, ya = xb[ok], yb[ok]
                x_adv = attack(model, xa, ya)
                with torch.no_grad():
                    ok = model(x_adv).argmax(1) == ya
            correct += ok.sum()
    return int(correct.item())


def robust_accuracy(model: nn.Module, data, attack: Attack | None, batch_size: int = 1024) -> float:
    """Fraction of samples classified correctly both clean and after ``attack(model, x, y)``.

    Like AutoAttack, a sample counts as robust only if its clean prediction is correct too:
    an attack that happens to "fix" a wrong prediction does not make a model robust. It
    also means only the correctly classified samples are attacked, which saves time.
    ``attack=None`` gives the clean accuracy. ``data`` is a split (``.x``, ``.y``) or ``(x, y)``.
    """
    return robust_correct(model, data, attack, batch_size) / max(1, len(_as_xy(data)[1]))


__all__ = ["eval_mode", "fgsm", "margin_loss", "LatentOutput",
           "pgd", "pgd_with_kappa", "prefer", "random_noise", "robust_accuracy",
           "robust_correct", "uniform_like", "Attack"]
