"""Cross-domain evaluation: the accuracy of the model being trained on other datasets, every epoch.

Each target in ``eval_datasets`` (a dataset or a corruption domain) is loaded once, converted
to the source's channels and size, and evaluated on its test split (a domain the model never
trains on) as ``xdomain_acc_<metric-safe name>``. The model normalizes inside with its
*source's* statistics, so a target is seen exactly as a deployed source model would see it
(``xdomain_normalize: source``, the default). ``xdomain_normalize: own`` standardizes each target
with its own dataset's statistics instead, as seeds 000/001 do in their transforms: the evaluator
maps the target's standardization onto the model's (x' = (x - m_t) / s_t * s_model + m_model), so
the backbone sees (x - m_t) / s_t. A corruption domain uses its base dataset's statistics.
Labels must mean the same thing: the targets' label spaces must equal the source's.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from functools import lru_cache

import torch

from .data import DataSpec, Split, domain_split, load, norm_stats
from .domain_names import check_targets, dataset_info, parse_name
from .metric_names import xdomain_metric_name
from .registry import declare, register


@lru_cache(maxsize=32)  # the 15 MNIST-C targets of a study fit: a rebuilt evaluator finds them all
def target_test(spec: DataSpec, device: str) -> Split:
    """A target's test split (``spec``: a ``DataSpec.target`` of the source's), loaded once per process (a
    fine-tuning phase rebuilds the evaluators). A corruption domain corrupts only this split (the same images
    as ``load(spec).test``)."""
    domain = parse_name(spec.dataset)
    base = load(replace(spec, dataset=domain.dataset, channels=None, size=None))
    return domain_split(base.test, domain, "test", seed=spec.split_seed, channels=spec.channels, size=spec.size,
                        device=device)


@torch.inference_mode()
def accuracy(model: torch.nn.Module, split: Split, batch_size: int = 1024, autocast=None,
             own_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """Clean accuracy on ``split``; with ``own_stats`` (mean, std of the split's dataset, (1, C, 1, 1)), each
    batch is first re-standardized so that the model's inner normalization yields (x - mean) / std."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=split.y.device)
    for i in range(0, len(split), batch_size):
        x = split.x[i : i + batch_size]
        if own_stats is not None:
            x = (x - own_stats[0]) / own_stats[1] * model.std + model.mean
        with autocast or contextlib.nullcontext():
            correct += (model(x).argmax(1) == split.y[i : i + batch_size]).sum()
    model.train(was_training)
    return correct.item() / max(1, len(split))


# How a target is normalized: with the model's own (source) statistics, or with the target dataset's.
XDOMAIN_NORMALIZATIONS = declare("xdomain_normalize", {"source": "the model's (source dataset's) statistics",
                                                       "own": "each target's own dataset statistics"})


def own_stats(name: str, channels: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A target's (base) dataset's mean and std for ``channels`` channels, shaped (1, C, 1, 1)."""
    mean, std = norm_stats(dataset_info(name), channels)
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


class CrossDomainEval:
    """A per-epoch evaluator: ``xdomain_acc_<target>`` of the reported model on every target's test split."""

    def __init__(self, source: DataSpec, targets, *, channels: int, size: int, device="cpu", batch_size: int = 1024,
                 normalize: str = "source"):
        """``source``: the run's data spec; each target loads like it (``DataSpec.target``) at ``channels`` /
        ``size``, the source's as the model sees them."""
        if normalize not in XDOMAIN_NORMALIZATIONS:
            raise ValueError(f"unknown xdomain_normalize '{normalize}'; choose one of: {', '.join(XDOMAIN_NORMALIZATIONS)}")
        self.names = check_targets(source.dataset, targets)
        self.metrics = [xdomain_metric_name(t) for t in self.names]
        self.batch_size = batch_size
        self.splits = [target_test(source.target(t, channels, size), str(device)) for t in self.names]
        self.stats = [own_stats(t, channels, device) if normalize == "own" else None for t in self.names]

    def measure(self, model: torch.nn.Module, autocast=None) -> dict[str, float]:
        return {m: accuracy(model, s, self.batch_size, autocast, st)
                for m, s, st in zip(self.metrics, self.splits, self.stats)}

    def __call__(self, trainer) -> dict[str, float]:
        return self.measure(trainer.eval_model(), trainer.autocast())


# ---------------------------------------------------------------- the xdomain_eval switch (eval_datasets set or not)
@register("xdomain_eval", "on")
def xdomain_eval_on(source: DataSpec, shape, device, batch_size: int, *,
                    eval_datasets: tuple[str, ...], xdomain_normalize: str) -> CrossDomainEval:
    channels, size, _ = shape
    return CrossDomainEval(source, eval_datasets, channels=channels, size=size, device=device, batch_size=batch_size,
                           normalize=xdomain_normalize)


@register("xdomain_eval", "off")
def xdomain_eval_off(source: DataSpec, shape, device, batch_size: int) -> None:
    return None

