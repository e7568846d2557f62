"""The plain values two registries hold: a dataset's facts and a corruption's levels.

They import no torch, so ``trainables.core.catalog`` can rebuild them from its file and a study is
validated (channels, classes, label spaces, severities) without loading a dataset or a corruption.
The callables they carry (a dataset's loader, a corruption's tensor function) are None there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

DEFAULT_SEVERITY = 3
SEVERITIES = range(1, 6)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool  # is a horizontal flip label-preserving?
    loader: Callable[..., Any] | None = field(repr=False, compare=False)  # (data_dir, download) -> RawSplits
    how_to_get: str = ""
    label_space: str = ""  # what the labels mean; datasets sharing it can be each other's domains (default: name)

    @property
    def labels(self) -> str:
        return self.label_space or self.name


@dataclass(frozen=True)
class Corruption:
    name: str
    fn: Callable[..., Any] | None  # (x, params_of_the_severity, generator) -> corrupted x (``corruptions.CorruptFn``)
    levels: tuple  # one parameter tuple per severity (a single entry: the corruption has no severity)
    doc: str
    size: int | None = None  # the image side it is defined on (MNIST-C's 28); None: any size

    @property
    def has_severity(self) -> bool:
        return len(self.levels) > 1


__all__ = ["DatasetInfo", "Corruption", "DEFAULT_SEVERITY", "SEVERITIES"]
