"""A corruption domain's seeded images (its name resolves in ``domain_names``).

A corruption domain is a derived dataset of any registered dataset (``fashion_mnist:rotate@3``,
``fashion_mnist:mnistc_fog``): a real, controlled domain shift that runs offline. A domain's random draws
come from a generator seeded by (seed, canonical name, split), so a domain is the same tensor every time.
They are corruptions generated here (MNIST-C's code re-implemented, not its released files): name them so
in reports.
"""

from __future__ import annotations

import zlib

import torch

from .corruptions import apply
from .domain_names import DomainName, parse_name


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
