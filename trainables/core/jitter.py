"""Colour jitter for RGB batches: per-sample brightness, contrast and saturation, on whole tensors.

Mild colour jitter as an augmentation for RGB domains. Grayscale data has no colour to jitter
(saturation does nothing, brightness/contrast are the corruption domains' business), so the
config rejects it there. Factors are drawn per sample from U[1 - s, 1 + s] on the trainer's
generator (checkpointed), then moved to the batch's device.
"""

from __future__ import annotations

import torch

GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def _factors(n: int, s: float, generator, device) -> torch.Tensor:
    return (1 + s * (2 * torch.rand(n, generator=generator) - 1)).to(device, non_blocking=True).view(n, 1, 1, 1)


def color_jitter(x: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Brightness, then contrast (about each image's mean gray), then saturation; clipped to [0, 1]."""
    if x.shape[1] != 3:
        raise ValueError(f"color jitter needs RGB images (3 channels), got {x.shape[1]}")
    if strength <= 0:
        return x
    n = len(x)
    w = torch.tensor(GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x * _factors(n, strength, generator, x.device)).clamp(0, 1)
    gray_mean = (x * w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = ((x - gray_mean) * _factors(n, strength, generator, x.device) + gray_mean).clamp(0, 1)
    gray = (x * w).sum(1, keepdim=True)
    return ((x - gray) * _factors(n, strength, generator, x.device) + gray).clamp(0, 1)
