"""The default step of each attack: a rule of numbers, importing no torch (the config's field descriptions
quote it, and study validation imports the config without torch)."""

from __future__ import annotations

# The default step of each attack, in units of eps (PGD's is spread over its steps): plain FGSM steps to the
# ball's boundary; FGSM-RS 1.25 eps, the step Wong et al. found to avoid catastrophic overfitting while still
# reaching the boundary from a random start; PGD 2.5 eps / steps (Madry et al.), enough to cross the ball and
# come back.
DEFAULT_STEPS = {"fgsm": 1.0, "fgsm_rs": 1.25, "pgd": 2.5}


def attack_step(attack: str, eps: float, steps: int = 1, given: float | None = None) -> float:
    """``given``, or the default step of ``attack`` (a key of ``DEFAULT_STEPS``) at ``eps`` and ``steps``."""
    if given is not None:
        return given
    if attack == "pgd":
        return DEFAULT_STEPS["pgd"] * eps / max(steps, 1)
    return DEFAULT_STEPS[attack] * eps


__all__ = ["DEFAULT_STEPS", "attack_step"]
