"""Every metric name the core reports, said once: each formatter beside its parser, and what each component
reports under a config.

The emitters (``Trainer``, ``RobustEval``, the cross-domain evaluation, the landscape probe, fine-tuning,
the Gaussian head's evaluator, the batch-level terms) take their names from here, and so does a family's
``metrics`` (what a study may name as its objective), so emitter and declaration cannot drift. It imports
no torch: study validation and the readers of results use it.
"""

from __future__ import annotations

from typing import Any

from .domain_names import parse_name
from .registry import config_fields

# ---------------------------------------------------------------- every epoch (Trainer.fit)
TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC, VAL_NLL = "train_loss", "train_acc", "val_loss", "val_acc", "val_nll"
LR, EPOCH_TIME, SAMPLES_PER_S = "lr", "epoch_time", "samples_per_s"
EPOCH_METRICS = (TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC, VAL_NLL, LR, EPOCH_TIME, SAMPLES_PER_S)
TEST_LOSS, TEST_ACC, TEST_NLL = "test_loss", "test_acc", "test_nll"
TEST_METRICS = (TEST_LOSS, TEST_ACC, TEST_NLL)  # the last epoch adds these
DIVERGED = "diverged"  # 1.0 on the epoch a run's loss stopped being finite
DEFAULT_OBJECTIVE = VAL_ACC

# ---------------------------------------------------------------- batch-level terms: train_<term>
TERM_PREFIX = "train_"


def term_metric(term: str) -> str:
    """``train_l1``: the mean of a batch-level term over an epoch."""
    return f"{TERM_PREFIX}{term}"


# When each batch-level term is on, a rule over the config fields it names (keyword-only, like a builder's):
# the term's builder asks it before building the term, ``term_metrics`` before naming ``train_<term>``.
TERMS_ON = {
    "l1": lambda *, l1: bool(l1),
    "circle": lambda *, circle_weight: bool(circle_weight),
    "regnet": lambda *, head: head == "gaussian",
    "kurtosis": lambda *, head, kurtosis_factor: head == "gaussian" and bool(kurtosis_factor),
}


def term_metrics(cfg: Any) -> tuple[str, ...]:
    """``train_<term>`` for each term ``cfg`` switches on, in the terms' order."""
    return tuple(term_metric(t) for t, on in TERMS_ON.items() if on(**{f: getattr(cfg, f) for f in config_fields(on)}))


# ---------------------------------------------------------------- robust evaluation (RobustEval), per eps
CLEAN_ACC = "clean_acc"
ATTACK_METRICS = ("fgsm", "fgsm_plain", "pgd", "noise")  # what ``RobustEval`` reports at every eps
_EPS_SEP = "_acc_eps"


def eps_tag(eps: float) -> str:
    """The eps part of a robust metric name (``pgd_acc_eps0.1``): short and stable across runs."""
    return f"{eps:.4g}"


def robust_metric_name(attack: str, eps: float) -> str:
    """``pgd_acc_eps0.1`` (MLflow metric names allow no ``@``); ``parse_metric_name`` reads it back."""
    return f"{attack}{_EPS_SEP}{eps_tag(eps)}"


def parse_metric_name(name: str) -> tuple[str, float] | None:
    """``(attack, eps)`` of a name ``robust_metric_name`` writes (``("pgd", 0.1)``), None for any other name."""
    attack, sep, tag = str(name).partition(_EPS_SEP)
    if not sep or attack not in ATTACK_METRICS:
        return None
    try:
        eps = float(tag)
    except ValueError:
        return None
    return (attack, eps) if robust_metric_name(attack, eps) == name else None


def robust_metric_names(eval_eps) -> tuple[str, ...]:
    """What ``RobustEval`` reports for these eps values."""
    return (CLEAN_ACC,) + tuple(robust_metric_name(a, eps) for eps in eval_eps for a in ATTACK_METRICS)


# ---------------------------------------------------------------- cross-domain evaluation, per target
XDOMAIN_PREFIX = "xdomain_acc_"


def xdomain_metric_name(name: str) -> str:
    """The cross-domain metric of a target: ``xdomain_acc_fashion_mnist_rotate_3`` (``XDOMAIN_PREFIX`` + name)."""
    return f"{XDOMAIN_PREFIX}{parse_name(name).safe}"


def xdomain_metrics(eval_datasets) -> tuple[str, ...]:
    """One per target; a bad name reports nothing (validation reports it at its key)."""
    try:
        return tuple(xdomain_metric_name(t) for t in eval_datasets or ())
    except ValueError:
        return ()


# ---------------------------------------------------------------- fine-tuning, landscape, the Gaussian head
FINETUNE_ACC, FINETUNE_ACC_BEFORE = "finetune_acc", "finetune_acc_before"
FINETUNE_METRICS = (FINETUNE_ACC, FINETUNE_ACC_BEFORE)
LANDSCAPE_LOSS_RANGE, LANDSCAPE_GRAD_CHANGE = "landscape_loss_range", "landscape_grad_change"
LANDSCAPE_METRICS = (LANDSCAPE_LOSS_RANGE, LANDSCAPE_GRAD_CHANGE)
# The Gaussian head's latent statistics (``gaussian_head.gaussianity_metrics``), reported as ``<split>_<stat>``.
KURTOSIS_MEAN, SKEW_MEAN, ABS_SKEW_MEAN, STD_MEAN = "kurtosis_mean", "skew_mean", "abs_skew_mean", "std_mean"
OWN_MEAN_ERROR, HIST_RMSE = "own_mean_error", "hist_rmse"
GAUSSIANITY_STATS = (KURTOSIS_MEAN, SKEW_MEAN, ABS_SKEW_MEAN, STD_MEAN, OWN_MEAN_ERROR, HIST_RMSE)


def split_metric(split: str, stat: str) -> str:
    """``val_kurtosis_mean``: a statistic measured on a split."""
    return f"{split}_{stat}"


GAUSSIANITY_METRICS = tuple(split_metric("val", s) for s in GAUSSIANITY_STATS)  # every epoch, on validation


def finetune_metrics(finetune_dataset: str | None) -> tuple[str, ...]:
    return FINETUNE_METRICS if finetune_dataset else ()


def landscape_metrics(landscape_probe: bool) -> tuple[str, ...]:
    return LANDSCAPE_METRICS if landscape_probe else ()


def gaussianity_names(head: str) -> tuple[str, ...]:
    return GAUSSIANITY_METRICS if head == "gaussian" else ()


# ---------------------------------------------------------------- the final epoch's independent check
# (trainables.independent_check: torchattacks at one eps; the report puts them beside each robust number)
INDEP_EPS, INDEP_PGD, INDEP_APGD, INDEP_APGD_DLR = "indep_eps", "indep_pgd_acc", "indep_apgd_acc", "indep_apgd_dlr_acc"
GRADIENT_MASKING = "gradient_masking"
INDEPENDENT_METRICS = (INDEP_EPS, INDEP_PGD, INDEP_APGD, INDEP_APGD_DLR, GRADIENT_MASKING)


# ---------------------------------------------------------------- what the core reports under a config
def evaluator_metrics(eval_eps, eval_datasets, finetune_dataset, landscape_probe) -> tuple[str, ...]:
    """What the evaluators these fields switch on report every epoch (robust, cross-domain, fine-tune, landscape)."""
    robust = robust_metric_names(eval_eps) if eval_eps else ()
    return (robust + xdomain_metrics(eval_datasets) + finetune_metrics(finetune_dataset)
            + landscape_metrics(landscape_probe))


def core_metrics(cfg: Any) -> tuple[str, ...]:
    """Every epoch of the core ``Trainer`` under a ``TrainConfig``: the epoch metrics, one ``train_<term>`` per
    term the config switches on, and each switched-on evaluator's metrics."""
    return EPOCH_METRICS + term_metrics(cfg) + evaluator_metrics(cfg.eval_eps, cfg.eval_datasets,
                                                                 cfg.finetune_dataset, cfg.landscape_probe)


__all__ = ["EPOCH_METRICS", "TEST_METRICS", "VAL_ACC", "TEST_ACC", "CLEAN_ACC", "DEFAULT_OBJECTIVE",
           "term_metric", "term_metrics", "TERMS_ON", "ATTACK_METRICS", "eps_tag", "robust_metric_name",
           "parse_metric_name", "robust_metric_names", "XDOMAIN_PREFIX", "xdomain_metric_name", "xdomain_metrics",
           "FINETUNE_METRICS", "finetune_metrics", "LANDSCAPE_METRICS", "landscape_metrics", "GAUSSIANITY_STATS",
           "GAUSSIANITY_METRICS", "split_metric", "gaussianity_names", "INDEPENDENT_METRICS", "GRADIENT_MASKING",
           "INDEP_EPS", "INDEP_PGD", "INDEP_APGD", "INDEP_APGD_DLR", "evaluator_metrics", "core_metrics"]
