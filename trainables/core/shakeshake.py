"""Shake-Shake 26 2x96d (Gastaldi 2017), the thesis's second encoder (section 3.3.5).

Each residual block has two branches (ReLU-Conv3x3-BN-ReLU-Conv3x3-BN) mixed as x + a F1(x) + (1 - a) F2(x).
In training, a ~ U(0, 1) per sample in the forward pass and an independent b ~ U(0, 1) per sample scales the
gradients in the backward pass ("Shake-Shake-Image", the best CIFAR-10 variant); in evaluation a = 0.5.
Depth 26 = 3 stages x 4 blocks x 2 convs + stem + classifier; widths 96, 192, 384 ("2x96d": 2 branches, 96 base).
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register


class _ShakeMix(torch.autograd.Function):
    """a * x1 + (1 - a) * x2 forward; gradients scaled by b and (1 - b) backward."""

    @staticmethod
    def forward(ctx, x1, x2, alpha, beta):
        ctx.save_for_backward(beta)
        return alpha * x1 + (1 - alpha) * x2

    @staticmethod
    def backward(ctx, grad):
        (beta,) = ctx.saved_tensors
        return beta * grad, (1 - beta) * grad, None, None


def shake_mix(x1: torch.Tensor, x2: torch.Tensor, training: bool) -> torch.Tensor:
    if not training:
        return 0.5 * (x1 + x2)
    shape = (x1.shape[0],) + (1,) * (x1.dim() - 1)
    alpha = torch.rand(shape, device=x1.device, dtype=x1.dtype)
    beta = torch.rand(shape, device=x1.device, dtype=x1.dtype)
    return _ShakeMix.apply(x1, x2, alpha, beta)


def _branch(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(inplace=False), nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
    )


class _Shortcut(nn.Module):
    """Gastaldi's downsampling shortcut: two strided 1x1 paths (one shifted by a pixel), concatenated, BN."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, cout // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(cin, cout - cout // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = torch.relu(x)
        a = nn.functional.avg_pool2d(x, 1, self.stride)
        b = nn.functional.avg_pool2d(nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1)), 1, self.stride)
        return self.bn(torch.cat([self.conv1(a), self.conv2(b)], 1))


class ShakeBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.branch1 = _branch(cin, cout, stride)
        self.branch2 = _branch(cin, cout, stride)
        self.shortcut = nn.Identity() if (cin == cout and stride == 1) else _Shortcut(cin, cout, stride)

    def forward(self, x):
        return self.shortcut(x) + shake_mix(self.branch1(x), self.branch2(x), self.training)


class ShakeShake(nn.Module):
    """Shake-Shake ResNet backbone: images -> (N, out_features) penultimate features."""

    def __init__(self, in_channels: int = 3, depth: int = 26, width: int = 96):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"shake-shake depth must be 6n + 2 (got {depth})")
        n = (depth - 2) // 6
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)]
        cin = 16
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                layers.append(ShakeBlock(cin, cout, 2 if (stage > 0 and i == 0) else 1))
                cin = cout
        layers += [nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.out_features = cin

    def forward(self, x):
        return self.body(x)


def shakeshake26_2x96d(in_channels: int = 3, width: int = 96) -> ShakeShake:
    """The thesis's encoder: depth 26, two branches, base width 96 (``width`` shrinks it for tests)."""
    return ShakeShake(in_channels, depth=26, width=width)


@register("backbone", "shakeshake26_2x96d")
def _shakeshake26_2x96d(in_channels: int, image_size: int) -> ShakeShake:
    """Shake-Shake 26 2x96d (26.2 M parameters); its own BatchNorm and ReLU, so no config field acts on it."""
    return shakeshake26_2x96d(in_channels)
