"""Cross-domain evaluation: the accuracy of the model being trained on other datasets, every epoch.

Each target in ``eval_datasets`` (a dataset or a corruption domain) is loaded once, converted
to the source's channels and size, and evaluated on its test split (a domain the model never
trains on) as ``xdomain_acc_<metric-safe name>``. The model normalizes inside with its
*source's* statistics, so a target is seen exactly as a deployed source model would see it.
Labels must mean the same thing: the targets' label spaces must equal the source's.
"""

from __future__ import annotations

import torch

from .corruptions import load_domain, metric_name, parse_name
from .data import DATASETS


def label_space(name: str) -> str:
    """What a dataset's labels mean (``digits`` for digits / MNIST / SVHN); a domain keeps its base's."""
    info = DATASETS[parse_name(name).dataset]
    return getattr(info, "label_space", "") or info.name


def check_targets(source: str, targets) -> list[str]:
    """The targets' canonical names; ValueError if a name is bad, repeated, or its labels mean something else."""
    src_space = label_space(source)
    out = []
    for t in targets:
        canonical = parse_name(t).canonical
        space = label_space(t)
        if space != src_space:
            raise ValueError(f"eval target '{t}' has labels of '{space}', the source '{source}' of '{src_space}': "
                             "cross-domain accuracy needs the same label space")
        if canonical in out:
            raise ValueError(f"eval target '{t}' is listed twice")
        out.append(canonical)
    return out


class CrossDomainEval:
    """``__call__(model) -> {xdomain_acc_<target>: accuracy}`` on every target's test split."""

    def __init__(self, source: str, targets, *, channels: int, size: int, device="cpu", split_seed: int = 0,
                 data_dir=None, download: bool = False, batch_size: int = 1024):
        self.names = check_targets(source, targets)
        self.metrics = [metric_name(t) for t in self.names]
        self.batch_size = batch_size
        self.splits = [load_domain(t, channels=channels, size=size, device=device, split_seed=split_seed,
                                   data_dir=data_dir, download=download).test for t in self.names]

    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module, autocast=None) -> dict[str, float]:
        import contextlib

        was_training = model.training
        model.eval()
        out = {}
        for metric, split in zip(self.metrics, self.splits):
            correct = torch.zeros((), dtype=torch.long, device=split.y.device)
            for i in range(0, len(split), self.batch_size):
                with autocast or contextlib.nullcontext():
                    correct += (model(split.x[i : i + self.batch_size]).argmax(1) == split.y[i : i + self.batch_size]).sum()
            out[metric] = correct.item() / max(1, len(split))
        model.train(was_training)
        return out
