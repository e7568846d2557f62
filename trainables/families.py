"""The experiment families a study can name: each is schema + metrics + trainer.

A ``Family`` declares
- its **schema**: the choices it allows for switch fields (``choices``: e.g. the optimization
  family trains without an adversary, so ``adv_mode`` is ``none`` and every ``adv_*`` field
  therefore has no effect there: an error, by the same rule as any field that does not act);
- its **metrics** as a function of the config (``metrics(config)``): what it reports every
  epoch, the only valid objectives, constraints and Pareto metrics;
- its **report sections** (``report``, ``"module:function"`` in ``analysis/``, imported by name like the
  trainable): ``search report`` asks the family, it never tests the family's name;
- its **trainer**: the trainable (``"module:function"``, imported lazily: Ray re-imports it by
  name) that runs the core ``Trainer`` with the family's hooks and final metrics.

Kept free of Ray and torch imports so that study validation (spaces/) can use it without importing either.
Families register with ``register_family`` in ``FAMILIES``: the core's ``Registry`` class, but not one of the
core's ``REGISTRIES`` (``declare``), because families sit above the core: the core builds components from a
``TrainConfig`` and never names a family, while a family is built from the core's parts (its schema, metrics
and trainer). Keeping ``FAMILIES`` here keeps ``kinds()`` to what a config can select inside the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from trainables.core.config import ConfigError, Problem, TrainConfig
from trainables.core.metric_names import (
    EPOCH_METRICS,
    core_metrics,
    evaluator_metrics,
    gaussianity_names,
    xdomain_metrics,
)
from trainables.core.registry import Registry

FAMILIES = Registry("family")  # not core.registry.declare: families sit above the core (see above)



def trial_metrics(config: Mapping[str, Any]) -> tuple[str, ...]:
    """What the core ``Trainer`` reports every epoch under ``config`` (``metric_names.core_metrics``); a config
    that does not validate reports what its raw values switch on, without terms (validation reports its errors)."""
    try:
        return core_metrics(TrainConfig.from_dict(dict(config), strict=False))
    except ConfigError:
        return EPOCH_METRICS + evaluator_metrics(config.get("eval_eps"), config.get("eval_datasets"),
                                                 config.get("finetune_dataset"), config.get("landscape_probe"))


@dataclass(frozen=True)
class Family:
    name: str
    trainable: str  # "module:function", imported lazily
    description: str
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # allowed values of switch fields
    extra_metrics: Callable[[Mapping[str, Any]], tuple[str, ...]] = lambda config: ()  # family hooks' metrics
    report: str = ""  # "module:function" of its report sections (analysis layer, taking a ReportContext), by name
    # Metrics the trial table shows beside the objective (``search run`` / ``show``): recorded on the search's
    # parent run when it starts, so the readers (records) need not import the families.
    shown_metrics: Callable[[Mapping[str, Any]], tuple[str, ...]] = lambda config: ()

    def metrics(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """Metrics reported every epoch by a trial with ``config`` (a dict of training fields)."""
        return trial_metrics(config) + tuple(self.extra_metrics(config))

    def schema_problems(self, config: Mapping[str, Any]) -> list[Problem]:
        """(field, why) for each value this family does not allow."""
        out = []
        for key, allowed in self.choices.items():
            if key in config and config[key] not in allowed:
                out.append(((key,), f"family '{self.name}' does not allow {key} {config[key]!r}; "
                                    f"allowed: {', '.join(map(str, allowed))}"))
        return out


def register_family(family: Family) -> Family:
    return FAMILIES.register(family.name, family)


register_family(Family(
    "optimization", "trainables.optimization:train_optimization",
    "configurable CNN / ResNet / VGG-A: activations, losses, optimizers, schedulers, BatchNorm",
    choices={"adv_mode": ("none",)},
))
register_family(Family(
    "adversarial", "trainables.adversarial:train_adversarial",
    "adversarial training (FGSM-RS, PGD-AT, GAIRAT) with clean / FGSM / PGD / noise accuracy per eps, "
    "and an independent torchattacks check of the final model",
    report="analysis.adversarial:sections",
))
register_family(Family(
    "generalization", "trainables.generalization:train_generalization",
    "cross-domain accuracy every epoch (eval_datasets: datasets and corruption domains), freeze and fine-tune "
    "on k samples per class of a target (finetune_*), Circle loss, ImageNet stem and weights, multistep_fraction, "
    "plain FGSM, adv_prob, colour jitter; saves the final model's predictions for the diagnostics (analysis.diagnostics)",
    report="analysis.generalization:sections",
    shown_metrics=lambda config: xdomain_metrics(config.get("eval_datasets")),
))

# ---------------------------------------------------------------- the regnet family's rules (its trainable reads them)
def loss_for(head: str) -> str:
    """In this family the per-sample loss follows the head: the RegNet terms are the Gaussian head's objective."""
    return "none" if head == "gaussian" else "cross_entropy"


# The evaluation FGSM of this family differentiates the loss each model trains on (the thesis's eq. 2.6 for the
# Gaussian head, the cross-entropy for the baseline), as the thesis drew its curves; ``fgsm_loss: ce | margin``
# in a study picks another.
FGSM_LOSS = "training"


def trial_config(config: Mapping[str, Any]) -> dict:
    """The training config of a regnet trial: the study's plus the loss its head implies (head default: linear),
    and, when it evaluates robustness (``eval_eps``), this family's FGSM loss unless the study names one."""
    out = {**config, "loss": loss_for(config.get("head", "linear"))}
    if config.get("eval_eps"):
        out.setdefault("fgsm_loss", FGSM_LOSS)
    return out


class RegNetFamily(Family):
    """The regnet family: ``head`` gaussian, or linear (the cross-entropy baseline inside the same search; the
    default, as everywhere); the per-sample loss follows the head (``loss_for``), so ``loss``
    is not writable."""

    def schema_problems(self, config: Mapping[str, Any]) -> list[Problem]:
        out = super().schema_problems(config)
        if "loss" in config:
            out.append((("loss",), f"family '{self.name}' sets the loss from the head (none with gaussian: the "
                        "RegNet terms are the objective; cross_entropy with linear); remove it"))
        return out

    def metrics(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        return super().metrics(trial_config(config))


register_family(RegNetFamily(
    "regnet", "trainables.regnet:train_regnet",
    "RegNet: Gaussian latent head (covariance / simplified loss, kurtosis term, nearest-mean prediction) vs the "
    "linear cross-entropy baseline; gaussianity metrics every epoch, plain and robust FGSM accuracy per eps",
    choices={"head": ("gaussian", "linear"), "adv_mode": ("none",)},
    extra_metrics=lambda config: gaussianity_names(config.get("head")),
    report="analysis.regnet:sections",
))

__all__ = ["Family", "RegNetFamily", "FAMILIES", "register_family", "trial_metrics", "trial_config", "loss_for",
           "FGSM_LOSS"]
