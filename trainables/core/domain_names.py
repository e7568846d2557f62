"""Dataset names resolved without data: ``DATASET[:CORRUPTION[@SEVERITY]]``, what a name's labels mean,
and which classes a config keeps.

A corruption domain is a derived dataset of any registered dataset (``fashion_mnist:rotate@3``,
``fashion_mnist:mnistc_fog``). Severity is 1..5 for our graded corruptions and defaults to
``DEFAULT_SEVERITY``; corruptions with one level (``invert``, every ``mnistc_*``) take no ``@``. Names
resolve against the dataset and corruption entries as ``catalog.entries`` gives them, so this imports no
torch: study validation uses it, and so do the data loaders (``domains`` makes a domain's images).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from .catalog import entries
from .infos import DEFAULT_SEVERITY, SEVERITIES, DatasetInfo

NAME = re.compile(r"^(?P<dataset>[A-Za-z0-9_]+)(?::(?P<corruption>[A-Za-z0-9_]+)(?:@(?P<severity>[^@:]*))?)?$")


@dataclass(frozen=True)
class DomainName:
    """A parsed dataset name: the base dataset, and a corruption with its severity (or none)."""

    dataset: str
    corruption: str | None = None
    severity: int | None = None

    @property
    def canonical(self) -> str:
        """One spelling per domain (the default severity written out): ``fashion_mnist:rotate@3``."""
        if self.corruption is None:
            return self.dataset
        if self.severity is None:
            return f"{self.dataset}:{self.corruption}"
        return f"{self.dataset}:{self.corruption}@{self.severity}"

    @property
    def safe(self) -> str:
        """Metric-safe (MLflow: alphanumerics, _ - . / space): ``fashion_mnist_rotate_3``."""
        return self.canonical.replace(":", "_").replace("@", "_")

    @property
    def image_size(self) -> int | None:
        """The side the corruption works at (MNIST-C's 28: the base is resized to it first); None: native."""
        return entries("corruption")[self.corruption].size if self.corruption else None


def parse_name(name: str, datasets: Mapping | None = None) -> DomainName:
    """Parse ``DATASET[:CORRUPTION[@SEVERITY]]``; raises ValueError naming the valid choices.

    ``datasets``: the names a base may take (default: the dataset entries).
    """
    if datasets is None:
        datasets = entries("dataset")
    m = NAME.match(str(name))
    if m is None:
        raise ValueError(f"bad dataset name {name!r}: write DATASET or DATASET:CORRUPTION[@SEVERITY], "
                         f"for example fashion_mnist:rotate@3")
    base, corr, sev = m["dataset"], m["corruption"], m["severity"]
    if base not in datasets:
        raise ValueError(f"unknown dataset '{base}' in {name!r}; choose one of: {', '.join(sorted(datasets))}")
    if corr is None:
        return DomainName(base)
    corruptions = entries("corruption")
    if corr not in corruptions:
        raise ValueError(f"unknown corruption '{corr}' in {name!r}; choose one of: {', '.join(sorted(corruptions))}")
    c = corruptions[corr]
    if not c.has_severity:
        if sev is not None:
            raise ValueError(f"corruption '{corr}' has one level: write {base}:{corr} without @{sev}")
        return DomainName(base, corr, None)
    if sev is None:
        return DomainName(base, corr, DEFAULT_SEVERITY)
    if not sev.isdigit() or int(sev) not in SEVERITIES:
        raise ValueError(f"severity in {name!r} must be an integer 1..{SEVERITIES[-1]}, not {sev!r}")
    return DomainName(base, corr, int(sev))


def dataset_info(name: str) -> DatasetInfo:
    """The info of a dataset, or of a corruption domain's base (same classes and statistics; the size is the
    corruption's where it has one: an ``mnistc_*`` domain is 28 x 28)."""
    datasets = entries("dataset")
    domain = parse_name(name, datasets)
    info = datasets[domain.dataset]
    return dataclasses.replace(info, size=domain.image_size) if domain.image_size else info


def label_space(name: str) -> str:
    """What a dataset's labels mean (``digits`` for digits / MNIST / SVHN); a domain keeps its base's."""
    return entries("dataset")[parse_name(name).dataset].labels


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


def class_selection(num_classes: int, classes: Sequence[int] | None = None,
                 class_groups: Sequence[Sequence[int]] | None = None) -> list[list[int]] | None:
    """The groups of old labels each new label takes (``classes``: one class each), None for all the classes;
    ValueError if the selection is empty, repeats a class or names one out of range."""
    if classes is not None and class_groups is not None:
        raise ValueError("set either classes or class_groups, not both")
    groups = [[c] for c in classes] if classes is not None else class_groups
    if groups is None:
        return None
    flat = [c for g in groups for c in g]
    if not groups or any(not g for g in groups):
        raise ValueError("classes / class_groups must not be empty")
    if len(set(flat)) != len(flat):
        raise ValueError(f"a class appears twice in {groups}")
    bad = [c for c in flat if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"classes {bad} out of range 0..{num_classes - 1}")
    return [list(g) for g in groups]


__all__ = ["DomainName", "parse_name", "dataset_info", "label_space", "check_targets", "class_selection", "NAME"]
