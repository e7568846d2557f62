"""Model registry: every model takes pixels in [0, 1] and exposes its penultimate features.

``Network`` puts the dataset normalization inside the model, so attacks and eps work in
pixel space, and gives every backbone the same two calls: ``features(x)`` (the penultimate
vector that UMAP and Circle loss need) and ``forward(x)`` (logits).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}
ACTIVATIONS: dict[str, Callable[[float], nn.Module]] = {
    "relu": lambda slope: nn.ReLU(inplace=True),
    "leaky_relu": lambda slope: nn.LeakyReLU(slope, inplace=True),
    "elu": lambda slope: nn.ELU(inplace=True),
    "gelu": lambda slope: nn.GELU(),
    "silu": lambda slope: nn.SiLU(inplace=True),
    "swish": lambda slope: nn.SiLU(inplace=True),
    "mish": lambda slope: nn.Mish(inplace=True),
}


def register_model(name: str):
    def wrap(fn):
        MODELS[name] = fn
        return fn

    return wrap


def activation(name: str, slope: float = 0.01) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name](slope)


def _norm(bn: bool, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


class Network(nn.Module):
    """Normalization + backbone + head. Input: pixels in [0, 1]."""

    def __init__(self, backbone: nn.Module, head: nn.Module, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.backbone = backbone
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------- configurable CNN
@register_model("cnn")
def cnn(in_channels, num_classes, image_size, *, filters=(32, 64, 128), activation_name="relu",
        slope=0.01, batchnorm=True, dropout=0.0, **_):
    """The CIFAR-10 optimization study's CNN: conv blocks, then fully connected 512 -> 256 -> classes."""
    layers, c, size = [], in_channels, image_size
    for f in filters:
        layers += [nn.Conv2d(c, f, 3, padding=1, bias=not batchnorm), _norm(batchnorm, f), activation(activation_name, slope)]
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        c = f
    layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * size * size, 512), activation(activation_name, slope),
               nn.Dropout(dropout), nn.Linear(512, 256), activation(activation_name, slope), nn.Dropout(dropout)]
    return nn.Sequential(*layers), nn.Linear(256, num_classes)


# ---------------------------------------------------------------- CIFAR-style ResNets
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, cout, stride, bn, act):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=not bn)
        self.bn1 = _norm(bn, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=not bn)
        self.bn2 = _norm(bn, cout)
        self.act = act()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=not bn), _norm(bn, cout))

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, bn, act):
        super().__init__()
        cout = planes * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=not bn), _norm(bn, planes), act(),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=not bn), _norm(bn, planes), act(),
            nn.Conv2d(planes, cout, 1, bias=not bn), _norm(bn, cout),
        )
        self.act = act()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=not bn), _norm(bn, cout))

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


def _resnet(block, depths, in_channels, num_classes, *, width=64, batchnorm=True, activation_name="relu",
            slope=0.01, **_):
    def act():
        return activation(activation_name, slope)

    layers = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=not batchnorm), _norm(batchnorm, width), act()]
    cin = width
    for i, n in enumerate(depths):
        planes = width * 2**i
        for j in range(n):
            layers.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1, batchnorm, act))
            cin = planes * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), nn.Linear(cin, num_classes)


@register_model("resnet18")
def resnet18(in_channels, num_classes, image_size, **kw):
    return _resnet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes, **kw)


@register_model("resnet34")
def resnet34(in_channels, num_classes, image_size, **kw):
    return _resnet(BasicBlock, (3, 4, 6, 3), in_channels, num_classes, **kw)


@register_model("resnet50")
def resnet50(in_channels, num_classes, image_size, **kw):
    return _resnet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes, **kw)


# ---------------------------------------------------------------- VGG-A (VGG-11)
@register_model("vgg11")
def vgg11(in_channels, num_classes, image_size, *, width=64, batchnorm=True, activation_name="relu",
          slope=0.01, dropout=0.0, **_):
    """VGG-A with or without BatchNorm; pooling stops once the feature map is 1x1."""
    cfg = [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"]
    layers, c, size = [], in_channels, image_size
    for v in cfg:
        if v == "M":
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            continue
        out = width * v
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=not batchnorm), _norm(batchnorm, out),
                   activation(activation_name, slope)]
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 512), activation(activation_name, slope),
               nn.Dropout(dropout)]
    return nn.Sequential(*layers), nn.Linear(512, num_classes)


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int, mean, std, **kwargs) -> Network:
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")
    backbone, head = MODELS[name](in_channels, num_classes, image_size, **kwargs)
    return Network(backbone, head, mean, std)
