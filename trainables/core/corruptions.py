"""Corruption domains: derived datasets of any registered dataset, in the spirit of MNIST-C / CIFAR-10-C.

MNIST, SVHN and CIFAR-10 cannot be fetched everywhere; a corrupted copy of a dataset that is
here (Fashion-MNIST, digits) is a real, controlled domain shift that runs offline. A domain is
named ``DATASET:CORRUPTION@SEVERITY`` (``fashion_mnist:rotate@3``); severity is 1..5 and defaults
to ``DEFAULT_SEVERITY`` (3); corruptions with one level (``invert``) take no ``@``. The images are
corrupted once, at load time, on whole tensors (affine grids, convolutions, elementwise ops: no
per-sample Python), with random draws from a generator seeded by (seed, name, split), so a
domain is the same tensor every time. These are "Fashion-MNIST-C-style corruptions generated
here", not the published MNIST-C / CIFAR-10-C files: name them so in reports.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

DEFAULT_SEVERITY = 3
SEVERITIES = range(1, 6)
CHUNK = 8192  # samples per batched op: bounds the memory of affine grids on 60k-image datasets

# fn(x, params_of_the_severity, generator) -> corrupted x; x is float (N, C, H, W) in [0, 1]
CorruptFn = Callable[[torch.Tensor, tuple, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    name: str
    fn: CorruptFn
    levels: tuple  # one parameter tuple per severity (a single entry: the corruption has no severity)
    doc: str

    @property
    def has_severity(self) -> bool:
        return len(self.levels) > 1


CORRUPTIONS: dict[str, Corruption] = {}


def register_corruption(name: str, levels: tuple, doc: str):
    def wrap(fn: CorruptFn) -> CorruptFn:
        if len(levels) not in (1, len(SEVERITIES)):
            raise ValueError(f"corruption {name!r}: give 1 level or {len(SEVERITIES)}, not {len(levels)}")
        CORRUPTIONS[name] = Corruption(name, fn, tuple(levels), doc)
        return fn

    return wrap


# ---------------------------------------------------------------- random draws (CPU generator, then moved)
def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)).float().to(device)


def _sign(n: int, g: torch.Generator, device) -> torch.Tensor:
    return (torch.randint(0, 2, (n,), generator=g) * 2 - 1).float().to(device)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp each image by its own 2x3 matrix (normalized coordinates), zero (black) outside."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---------------------------------------------------------------- the corruptions
@register_corruption("rotate", ((10, 20), (20, 30), (30, 45), (45, 60), (60, 80)),
                     "rotation by a random sign times U(lo, hi) degrees about the centre")
def rotate(x, level, g):
    n = len(x)
    a = torch.deg2rad(_sign(n, g, x.device) * _uniform(n, *level, g, x.device))
    c, s = torch.cos(a), torch.sin(a)
    z = torch.zeros_like(a)
    theta = torch.stack([torch.stack([c, -s, z], 1), torch.stack([s, c, z], 1)], 1)
    return _affine(x, theta)


@register_corruption("shear", ((0.1, 0.2), (0.2, 0.3), (0.3, 0.45), (0.45, 0.6), (0.6, 0.8)),
                     "horizontal or vertical shear (random axis and sign) by a factor U(lo, hi)")
def shear(x, level, g):
    n = len(x)
    k = _sign(n, g, x.device) * _uniform(n, *level, g, x.device)
    horizontal = (torch.rand(n, generator=g) < 0.5).to(x.device)
    one, z = torch.ones_like(k), torch.zeros_like(k)
    kx, ky = torch.where(horizontal, k, z), torch.where(horizontal, z, k)
    theta = torch.stack([torch.stack([one, kx, z], 1), torch.stack([ky, one, z], 1)], 1)
    return _affine(x, theta)


@register_corruption("translate", ((0.05, 0.1), (0.1, 0.15), (0.15, 0.2), (0.2, 0.25), (0.25, 0.3)),
                     "shift in a random direction by U(lo, hi) of the image side")
def translate(x, level, g):
    n = len(x)
    d = 2 * _uniform(n, *level, g, x.device)  # normalized coordinates span 2 per image side
    phi = _uniform(n, 0, 2 * math.pi, g, x.device)
    one, z = torch.ones_like(d), torch.zeros_like(d)
    theta = torch.stack([torch.stack([one, z, d * torch.cos(phi)], 1), torch.stack([z, one, d * torch.sin(phi)], 1)], 1)
    return _affine(x, theta)


@register_corruption("scale", ((0.85, 0.9), (0.75, 0.85), (0.65, 0.75), (0.55, 0.65), (0.45, 0.55)),
                     "zoom out: the image shrinks to U(lo, hi) of its size about the centre")
def scale(x, level, g):
    n = len(x)
    inv = 1.0 / _uniform(n, *level, g, x.device)
    z = torch.zeros_like(inv)
    theta = torch.stack([torch.stack([inv, z, z], 1), torch.stack([z, inv, z], 1)], 1)
    return _affine(x, theta)


@register_corruption("gaussian_noise", ((0.08,), (0.12,), (0.18,), (0.26,), (0.38,)),
                     "additive N(0, sigma^2) pixel noise, clipped to [0, 1]")
def gaussian_noise(x, level, g):
    noise = torch.randn(x.shape, generator=g).to(x.device)
    return (x + level[0] * noise).clamp_(0, 1)


@register_corruption("impulse_noise", ((0.03,), (0.06,), (0.09,), (0.17,), (0.27,)),
                     "salt-and-pepper: a fraction p of pixels set to 0 or 1")
def impulse_noise(x, level, g):
    u = torch.rand(x.shape, generator=g).to(x.device)
    salt = torch.rand(x.shape, generator=g).to(x.device) < 0.5
    return torch.where(u < level[0], salt.to(x.dtype), x)


@register_corruption("blur", ((0.6,), (0.9,), (1.2,), (1.6,), (2.2,)),
                     "Gaussian blur, sigma in pixels of a 28-pixel image (scaled to the size, at least half)")
def blur(x, level, g):
    from .tv import torchvision  # the compat import: never import torchvision directly

    sigma = level[0] * max(x.shape[-1] / 28, 0.5)  # tiny images (8x8 digits) still blur visibly
    k = 2 * math.ceil(3 * sigma) + 1
    k = min(k, x.shape[-1] - (1 - x.shape[-1] % 2))  # odd and no larger than the image
    return torchvision.transforms.v2.functional.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])


@register_corruption("contrast", ((0.6,), (0.45,), (0.3,), (0.2,), (0.1,)),
                     "contrast scaled by c about each image's mean")
def contrast(x, level, g):
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * level[0] + mean


@register_corruption("brightness", ((0.1,), (0.2,), (0.3,), (0.4,), (0.5,)),
                     "brightness raised by b (added, clipped to [0, 1])")
def brightness(x, level, g):
    return (x + level[0]).clamp_(0, 1)


@register_corruption("pixelate", ((2,), (3,), (4,), (5,), (6,)),
                     "averaged over b x b pixel blocks (b for a 28-pixel image, scaled to the size, at least 2)")
def pixelate(x, level, g):
    h, w = x.shape[-2:]
    b = max(2, round(level[0] * w / 28))  # a 1-pixel block would be no corruption at all
    cells = F.avg_pool2d(x, kernel_size=b, stride=b, ceil_mode=True)
    return cells.repeat_interleave(b, dim=-2).repeat_interleave(b, dim=-1)[..., :h, :w]


@register_corruption("invert", ((),), "photographic negative 1 - x (one level: no severity)")
def invert(x, level, g):
    return 1.0 - x


# ---------------------------------------------------------------- names
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


def parse_name(name: str, datasets=None) -> DomainName:
    """Parse ``DATASET[:CORRUPTION[@SEVERITY]]``; raises ValueError naming the valid choices.

    ``datasets``: the names a base may take (default: the dataset registry).
    """
    if datasets is None:
        from .data import DATASETS as datasets
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


def metric_name(name: str, datasets=None) -> str:
    """The cross-domain metric of a target: ``xdomain_acc_fashion_mnist_rotate_3`` (``XDOMAIN_PREFIX`` + name)."""
    return f"{XDOMAIN_PREFIX}{parse_name(name, datasets).safe}"


# ---------------------------------------------------------------- applying
def _stream(seed: int, domain: DomainName, tag: str) -> torch.Generator:
    """A generator of its own for (seed, domain, split): stable across processes (crc32, not hash())."""
    key = zlib.crc32(f"{domain.canonical}/{tag}".encode())
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + key) % (2**63))


@torch.no_grad()
def corrupt(x: torch.Tensor, name: str | DomainName, *, seed: int = 0, tag: str = "") -> torch.Tensor:
    """The images ``x`` (float, [0, 1], (N, C, H, W)) of the domain ``name``; a base name returns ``x``.

    ``tag`` separates the random streams of the splits of one domain (``train``, ``val``, ``test``).
    The same (x, name, seed, tag) always gives the same tensor.
    """
    domain = name if isinstance(name, DomainName) else parse_name(name)
    if domain.corruption is None:
        return x
    c = CORRUPTIONS[domain.corruption]
    level = c.levels[(domain.severity or 1) - 1] if c.has_severity else c.levels[0]
    if not torch.is_floating_point(x):
        raise TypeError(f"corrupt() takes float images in [0, 1], got {x.dtype}")
    g = _stream(seed, domain, tag)
    out = [c.fn(x[i : i + CHUNK], level, g).clamp_(0, 1) for i in range(0, len(x), CHUNK)]
    return torch.cat(out) if out else x.clone()


def describe() -> str:
    """One line per corruption (for docs and ``--help``): name, levels, what it does."""
    lines = []
    for c in CORRUPTIONS.values():
        levels = "one level" if not c.has_severity else "severity 1..5: " + ", ".join(map(str, c.levels))
        lines.append(f"{c.name}: {c.doc} ({levels})")
    return "\n".join(lines)


def load_domain(name: str, *, channels: int | None = None, size: int | None = None, device="cpu",
                split_seed: int = 0, **load_kwargs):
    """``load_data`` for any dataset name, corruption domains included.

    A domain is its base dataset with every split corrupted at the base's native size (so a domain
    is the same images whoever evaluates it), then converted to ``channels`` / ``size``. The random
    draws are seeded by ``split_seed``, the seed that already fixes which samples validate: every
    trial of a search sees the same domain whatever its training seed. The domain keeps the base's
    normalization statistics (the model normalizes inside, with its source's statistics).
    """
    from dataclasses import replace

    from .data import Split, convert, load_data

    domain = parse_name(name)
    if domain.corruption is None:
        return load_data(name, channels=channels, size=size, device=device, split_seed=split_seed, **load_kwargs)
    base = load_data(domain.dataset, split_seed=split_seed, **load_kwargs)  # native size, CPU

    def make(split: Split, tag: str) -> Split:
        x = convert(corrupt(split.x, domain, seed=split_seed, tag=tag), channels, size)
        return Split(x.to(device), split.y.to(device))

    return replace(base, info=replace(base.info, name=domain.canonical), train=make(base.train, "train"),
                   val=make(base.val, "val"), test=make(base.test, "test"),
                   source=f"{base.source} + {domain.corruption}" + (f"@{domain.severity}" if domain.severity else "")
                   + " (generated here)")
