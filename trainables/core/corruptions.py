"""Corruptions: pure functions of an image tensor, by name (what a domain name resolves to is in ``domains``).

Two families. Our own graded corruptions (``rotate``, ``blur``, ... with severity 1..5, default
``DEFAULT_SEVERITY``) are a severity ladder in the spirit of MNIST-C / CIFAR-10-C, with parameters chosen
here. ``mnistc_<name>`` are the 15 corruptions of MNIST-C as published (``mnistc``), each with the one
parameter set of the released dataset (no severity) and defined on 28 x 28 images. Every corruption
works on whole tensors (affine grids, convolutions, elementwise ops: no per-sample Python) and draws
its randomness from the generator it is given, so the same generator state gives the same images.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from . import mnistc
from .infos import SEVERITIES, Corruption
from .registry import declare, register

CHUNK = 8192  # samples per batched op: bounds the memory of affine grids on 60k-image datasets

# fn(x, params_of_the_severity, generator) -> corrupted x; x is float (N, C, H, W) in [0, 1]
CorruptFn = Callable[[torch.Tensor, tuple, torch.Generator], torch.Tensor]


CORRUPTIONS = declare("corruption")  # name -> Corruption: the one list of corruption names


def register_corruption(name: str, levels: tuple, doc: str, size: int | None = None):
    """``@register_corruption(name, levels, doc)`` on a ``CorruptFn``: registers its ``Corruption`` under
    ``name`` in the ``corruption`` registry (the function itself stays a plain tensor function)."""

    def wrap(fn: CorruptFn) -> CorruptFn:
        if len(levels) not in (1, len(SEVERITIES)):
            raise ValueError(f"corruption {name!r}: give 1 level or {len(SEVERITIES)}, not {len(levels)}")
        register("corruption", name, Corruption(name, fn, tuple(levels), doc, size))
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
    from .torchvision_compat import torchvision  # the compat import: never import torchvision directly

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



# ---------------------------------------------------------------- MNIST-C as published
def _mnistc(name: str, doc: str):
    return register_corruption(f"mnistc_{name}", ((),), f"MNIST-C {name}: {doc}", size=mnistc.SIZE)


@_mnistc("shot_noise", "Poisson(3 x) / 3")
def mnistc_shot_noise(x, level, g):
    return mnistc.shot_noise(x, g)


@_mnistc("impulse_noise", "salt and pepper on 17 % of the pixels")
def mnistc_impulse_noise(x, level, g):
    return mnistc.impulse_noise(x, *mnistc.draw_impulse_noise(x.shape, g))


@_mnistc("glass_blur", "vertical blur (sigma 0.7), pixels swapped with a neighbour twice, blurred again")
def mnistc_glass_blur(x, level, g):
    return mnistc.glass_blur(x, *mnistc.draw_glass_blur(len(x), g, x.shape[-1]))


@_mnistc("motion_blur", "one-sided Gaussian streak (radius 10, sigma 3) at an angle U(-45, 45) degrees")
def mnistc_motion_blur(x, level, g):
    return mnistc.motion_blur(x, mnistc.draw_motion_blur(len(x), g))


@_mnistc("shear", "shear by 0.4 rad, random direction, about the centre")
def mnistc_shear(x, level, g):
    return mnistc.shear(x, mnistc.draw_sign(len(x), g))


@_mnistc("scale", "shrunk to 70 % about the centre")
def mnistc_scale(x, level, g):
    return mnistc.scale(x)


@_mnistc("rotate", "rotation by 0.4 rad (22.9 degrees), random direction")
def mnistc_rotate(x, level, g):
    return mnistc.rotate(x, mnistc.draw_sign(len(x), g))


@_mnistc("brightness", "HSV value + 0.5")
def mnistc_brightness(x, level, g):
    return mnistc.brightness(x)


@_mnistc("translate", "shifted 3 pixels along each axis, random directions")
def mnistc_translate(x, level, g):
    return mnistc.translate(x, mnistc.draw_translate(len(x), g))


@_mnistc("stripe", "the outer quarters of the columns inverted")
def mnistc_stripe(x, level, g):
    return mnistc.stripe(x)


@_mnistc("fog", "plasma-fractal fog of strength 3")
def mnistc_fog(x, level, g):
    return mnistc.fog(x, mnistc.draw_plasma(len(x), g, x.shape[-1]))


@_mnistc("spatter", "mud spatter")
def mnistc_spatter(x, level, g):
    return mnistc.spatter(x, mnistc.draw_spatter(len(x), g, x.shape[-1]))


@_mnistc("dotted_line", "a dotted line across the image")
def mnistc_dotted_line(x, level, g):
    return mnistc.dotted_line(x, mnistc.draw_dotted_line(len(x), g))


@_mnistc("zigzag", "a zigzag line across the image")
def mnistc_zigzag(x, level, g):
    return mnistc.zigzag(x, mnistc.draw_zigzag(len(x), g))


@_mnistc("canny_edges", "the image's Canny edges (sigma 1) in place of the image")
def mnistc_canny_edges(x, level, g):
    return mnistc.canny_edges(x)


# ---------------------------------------------------------------- applying
@torch.no_grad()
def apply(x: torch.Tensor, corruption: str, severity: int | None, generator: torch.Generator) -> torch.Tensor:
    """``x`` (float, [0, 1], (N, C, H, W)) corrupted by ``corruption`` at ``severity`` (None for one-level ones),
    drawing from ``generator``, in chunks of ``CHUNK`` samples."""
    c = CORRUPTIONS[corruption]
    level = c.levels[(severity or 1) - 1] if c.has_severity else c.levels[0]
    if not torch.is_floating_point(x):
        raise TypeError(f"corruption {corruption!r} takes float images in [0, 1], got {x.dtype}")
    if c.size is not None and tuple(x.shape[-2:]) != (c.size, c.size):
        raise ValueError(f"corruption {corruption!r} is defined on {c.size} x {c.size} images, got "
                         f"{tuple(x.shape[-2:])}: resize first")
    out = [c.fn(x[i : i + CHUNK], level, generator).clamp_(0, 1) for i in range(0, len(x), CHUNK)]
    return torch.cat(out) if out else x.clone()


def describe() -> str:
    """One line per corruption (for docs and ``--help``): name, levels, what it does."""
    lines = []
    for c in CORRUPTIONS.values():
        levels = "one level" if not c.has_severity else "severity 1..5: " + ", ".join(map(str, c.levels))
        lines.append(f"{c.name}: {c.doc} ({levels})")
    return "\n".join(lines)
