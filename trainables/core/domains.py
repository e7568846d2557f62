"""Dataset names: ``DATASET[:CORRUPTION[@SEVERITY]]`` resolved in one place, and a domain's seeded images.

A corruption domain is a derived dataset of any registered dataset (``fashion_mnist:rotate@3``,
``fashion_mnist:mnistc_fog``): a real, controlled domain shift that runs offline. Severity is 1..5 for our
graded corruptions and defaults to ``DEFAULT_SEVERITY``; corruptions with one level (``invert``, every
``mnistc_*``) take no ``@``. A domain's random draws come from a generator seeded by (seed, canonical
name, split), so a domain is the same tensor every time. They are corruptions generated here (MNIST-C's
code re-implemented, not its released files): name them so in reports.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Mapping

import torch

from .corruptions import CORRUPTIONS, DEFAULT_SEVERITY, SEVERITIES, apply
from .registry import registry

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
        return CORRUPTIONS[self.corruption].size if self.corruption else None


def parse_name(name: str, datasets: Mapping | None = None) -> DomainName:
    """Parse ``DATASET[:CORRUPTION[@SEVERITY]]``; raises ValueError naming the valid choices.

    ``datasets``: the names a base may take (default: the dataset registry).
    """
    if datasets is None:
        datasets = registry("dataset")
    m = NAME.match(str(name))
    if m is None:
        raise ValueError(f"bad dataset name {name!r}: write DATASET or DATASET:CORRUPTION[@SEVERITY], "
                         f"for example fashion_mnist:rotate@3")
    base, corr, sev = m["dataset"], m["corruption"], m["severity"]
    if base not in datasets:
        raise ValueError(f"unknown dataset '{base}' in {name!r}; choose one of: {', '.join(sorted(datasets))}")
    if corr is None:
        return DomainName(base)
    if corr not in CORRUPTIONS:
        raise ValueError(f"unknown corruption '{corr}' in {name!r}; choose one of: {', '.join(sorted(CORRUPTIONS))}")
    c = CORRUPTIONS[corr]
    if not c.has_severity:
        if sev is not None:
            raise ValueError(f"corruption '{corr}' has one level: write {base}:{corr} without @{sev}")
        return DomainName(base, corr, None)
    if sev is None:
        return DomainName(base, corr, DEFAULT_SEVERITY)
    if not sev.isdigit() or int(sev) not in SEVERITIES:
        raise ValueError(f"severity in {name!r} must be an integer 1..{SEVERITIES[-1]}, not {sev!r}")
    return DomainName(base, corr, int(sev))


XDOMAIN_PREFIX = "xdomain_acc_"


def xdomain_metric_name(name: str, datasets: Mapping | None = None) -> str:
    """The cross-domain metric of a target: ``xdomain_acc_fashion_mnist_rotate_3`` (``XDOMAIN_PREFIX`` + name)."""
    return f"{XDOMAIN_PREFIX}{parse_name(name, datasets).safe}"


def _stream(seed: int, domain: DomainName, tag: str) -> torch.Generator:
    """A generator of its own for (seed, domain, split): stable across processes (crc32, not hash())."""
    key = zlib.crc32(f"{domain.canonical}/{tag}".encode())
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + key) % (2**63))


def corrupt(x: torch.Tensor, name: str | DomainName, *, seed: int = 0, tag: str = "") -> torch.Tensor:
    """The images ``x`` (float, [0, 1], (N, C, H, W)) of the domain ``name``; a base name returns ``x``.

    ``tag`` separates the random streams of the splits of one domain (``train``, ``val``, ``test``).
    The same (x, name, seed, tag) always gives the same tensor.
    """
    domain = name if isinstance(name, DomainName) else parse_name(name)
    if domain.corruption is None:
        return x
    return apply(x, domain.corruption, domain.severity, _stream(seed, domain, tag))
