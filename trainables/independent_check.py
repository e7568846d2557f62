"""An independent robustness check with torchattacks, to catch gradient masking.

Our own PGD can report inflated robustness when a model's gradients are uninformative
(masked or obfuscated): the attack then fails for reasons that have nothing to do with
robustness. APGD (step-size free, momentum, restarts from the best point) and AutoAttack
are much harder to fool that way, and running another implementation also guards against
a bug in ours. ``gradient_masking_flag`` says when the two disagree by too much.

Accuracies are counted like ``attacks.robust_accuracy`` (a sample counts only if its clean
and adversarial predictions are both correct), so the numbers compare directly.
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.core.metric_names import (
    CLEAN_ACC,
    GRADIENT_MASKING,
    INDEP_APGD,
    INDEP_APGD_DLR,
    INDEP_EPS,
    INDEP_PGD,
    robust_metric_name,
)
from trainables.core.attacks import eval_mode
from trainables.core.steps import attack_step
from trainables.core.torchvision_compat import torchvision  # noqa: F401 - must precede torchattacks, which imports torchvision


def _attacks(model: nn.Module, eps: float, steps: int, autoattack: bool, n_classes: int, seed: int,
             dlr: bool = False) -> dict:
    import torchattacks  # here, not at the top: the import sorter would hoist it above trainables.core.torchvision_compat

    found = {
        "pgd_acc": torchattacks.PGD(model, eps=eps, alpha=attack_step("pgd", eps, steps), steps=steps, random_start=True),
        "apgd_acc": torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed),
    }
    if dlr and n_classes >= 3:  # DLR needs the third-largest score
        found["apgd_dlr_acc"] = torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="dlr",
                                                  seed=seed)
    if autoattack:
        found["autoattack_acc"] = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard",
                                                          n_classes=n_classes, seed=seed)
    return found


def independent_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 20,
                      autoattack: bool = False, batch_size: int = 512, seed: int = 0,
                      dlr: bool = False) -> dict[str, float]:
    """Clean accuracy and accuracy under torchattacks' PGD, APGD (and AutoAttack if asked).

    ``dlr`` adds APGD on the DLR loss (``apgd_dlr_acc``, 3+ classes), which is invariant to the scale of the
    scores: it still finds adversarial examples when a saturated softmax zeroes the cross-entropy gradient
    (as with RegNet's squared-distance scores at large mu_T).

    ``x`` holds pixels in [0, 1], which is what our models take and torchattacks expects.
    PGD uses our evaluation's default step (``attack_step``) and a random start. The global RNG is
    forked and seeded, so the check is reproducible and leaves training's RNG alone.
    AutoAttack (standard) is slow: it is for final models, not for every epoch.
    """
    devices = [x.device.index or 0] if x.device.type == "cuda" else []  # torchattacks draws on x's device
    with torch.random.fork_rng(devices=devices), eval_mode(model), torch.inference_mode(False):
        torch.manual_seed(seed)
        x, y = x.detach().clone(), y.clone()
        with torch.no_grad():
            n_classes = model(x[:1]).shape[1]
        ok = torch.cat([_predict(model, x[i : i + batch_size]) == y[i : i + batch_size]
                        for i in range(0, len(y), batch_size)])
        out = {CLEAN_ACC: int(ok.sum()) / max(1, len(y))}
        if eps <= 0:
            return {**out, "pgd_acc": out[CLEAN_ACC], "apgd_acc": out[CLEAN_ACC],
                    **({"autoattack_acc": out[CLEAN_ACC]} if autoattack else {}),
                    **({"apgd_dlr_acc": out[CLEAN_ACC]} if dlr and n_classes >= 3 else {})}
        xs, ys = x[ok], y[ok]  # only correctly classified samples can still count
        for name, attack in _attacks(model, eps, steps, autoattack, n_classes, seed, dlr).items():
            kept = 0
            for i in range(0, len(ys), batch_size):
                xb, yb = xs[i : i + batch_size], ys[i : i + batch_size]
                kept += int((_predict(model, attack(xb, yb)) == yb).sum())
            out[name] = kept / max(1, len(y))
    return out


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def gradient_masking_flag(our_pgd_acc: float, independent_acc: float, threshold: float = 0.02) -> bool:
    """True when our PGD accuracy exceeds the independent attack's by more than ``threshold``.

    A stronger independent attack is expected to win by a little; winning by more than
    ``threshold`` (2 points by default) means our PGD is being fooled, e.g. by masked gradients.
    """
    return our_pgd_acc - independent_acc > threshold + 1e-9


INDEPENDENT_SAMPLES = 500  # enough for a 2-point comparison on a CPU in seconds


def independent_metrics(trainer, metrics: dict[str, float], eps: float, *, dlr: bool = False) -> dict[str, float]:
    """The family's final-epoch check at ``eps``: torchattacks PGD / APGD (and APGD-DLR with ``dlr``) on the first
    validation samples, and ``gradient_masking`` (1.0 / 0.0) when our PGD at ``eps`` beats the strongest of them."""
    if eps <= 0:
        return {}
    cfg = trainer.cfg
    n = min(cfg.eval_samples, INDEPENDENT_SAMPLES)
    val = trainer.data.val
    found = independent_check(trainer.eval_model(), val.x[:n], val.y[:n], eps, steps=cfg.eval_pgd_steps,
                              seed=cfg.seed, dlr=dlr)
    out = {INDEP_EPS: eps, INDEP_PGD: found["pgd_acc"], INDEP_APGD: found["apgd_acc"]}
    if "apgd_dlr_acc" in found:
        out[INDEP_APGD_DLR] = found["apgd_dlr_acc"]
    ours = metrics.get(robust_metric_name("pgd", eps))
    if ours is not None:
        strongest = min(v for k, v in out.items() if k != INDEP_EPS)
        out[GRADIENT_MASKING] = float(gradient_masking_flag(ours, strongest))
    return out


__all__ = ["independent_check", "gradient_masking_flag", "independent_metrics"]
