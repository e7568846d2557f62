"""Models = backbone + head, both from registries; every model takes pixels in [0, 1].

- A **backbone** builder ``(in_channels, image_size, *, <config fields>)`` returns an
  ``nn.Module`` mapping normalized images to features ``(B, F)`` with ``out_features = F``.
- A **head** builder ``(in_features, num_classes, *, <config fields>)`` returns a ``Head``:
  ``latent(features)`` is the head's representation, ``scores(latent)`` the class scores
  whose argmax is the prediction. For ``linear`` the latent *is* the logits; a Gaussian-latent
  head returns its latent z and scores such as the negative distance to each class mean.
- An **activation** builder ``(*, <config fields>)`` returns a factory ``() -> nn.Module``
  (one fresh module per use); backbones declare the ``activation`` field and receive it.

``Network`` puts the dataset normalization inside the model (so an attack's eps means pixels
on every dataset) and gives every model the same calls: ``forward(x)`` -> scores (what
evaluation, attacks, torchattacks and calibration use), ``features(x)`` (penultimate, for
UMAP) and ``outputs(x)`` -> ``StepOutput`` (scores, features, latent in one forward, for the
training step's batch-level loss terms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .registry import build, declare, register, registry

BACKBONES = declare("backbone")
HEADS = declare("head")
ACTIVATIONS = declare("activation")
MODELS = BACKBONES  # the config field is ``model``: a model is named by its backbone

ActivationFactory = Callable[[], nn.Module]


# ---------------------------------------------------------------- activations
@register("activation", "relu")
def relu() -> ActivationFactory:
    return lambda: nn.ReLU(inplace=True)


@register("activation", "leaky_relu")
def leaky_relu(*, leaky_slope: float) -> ActivationFactory:
    return lambda: nn.LeakyReLU(leaky_slope, inplace=True)


@register("activation", "elu")
def elu() -> ActivationFactory:
    return lambda: nn.ELU(inplace=True)


@register("activation", "gelu")
def gelu() -> ActivationFactory:
    return nn.GELU


@register("activation", "silu")
def silu() -> ActivationFactory:
    return lambda: nn.SiLU(inplace=True)


@register("activation", "swish")
def swish() -> ActivationFactory:
    return lambda: nn.SiLU(inplace=True)


@register("activation", "mish")
def mish() -> ActivationFactory:
    return lambda: nn.Mish(inplace=True)


def _norm(bn: bool, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


def _features(layers: list[nn.Module], out_features: int) -> nn.Sequential:
    body = nn.Sequential(*layers)
    body.out_features = out_features
    return body


# ---------------------------------------------------------------- heads and the network
@dataclass
class StepOutput:
    """One forward pass, as the training step sees it."""

    scores: torch.Tensor  # (B, classes): argmax is the prediction; what per-sample losses take
    features: torch.Tensor  # (B, F): the backbone's output, before the head
    latent: torch.Tensor  # the head's representation (== scores for ``linear``; z for a Gaussian head)


class Head(nn.Module):
    """A head: ``latent(features)`` then ``scores(latent)``; ``forward`` composes them."""

    def latent(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scores(self.latent(features))


class LinearHead(Head):
    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def latent(self, features):
        return self.fc(features)


@register("head", "linear")
def linear(in_features: int, num_classes: int) -> Head:
    """Logits = W f + b: the latent is the logits."""
    return LinearHead(in_features, num_classes)


class Network(nn.Module):
    """Normalization + backbone + head. Input: pixels in [0, 1]; ``forward`` returns scores."""

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

    def outputs(self, x: torch.Tensor) -> StepOutput:
        f = self.features(x)
        if isinstance(self.head, Head):
            z = self.head.latent(f)
            return StepOutput(self.head.scores(z), f, z)
        s = self.head(f)
        return StepOutput(s, f, s)


def build_network(cfg: Any, *, in_channels: int, num_classes: int, image_size: int, mean, std) -> Network:
    """The configured backbone (``cfg.model``) and head (``cfg.head``) from their registries."""
    act = build("activation", cfg.activation, cfg)
    backbone = build("backbone", cfg.model, cfg, in_channels, image_size, activation=act)
    head = build("head", cfg.head, cfg, backbone.out_features, num_classes)
    stats = build("pretrained", cfg.pretrained, cfg, backbone, cfg.model)  # the weights' own normalization, if any
    mean, std = stats if stats is not None else (mean, std)
    return Network(backbone, head, mean, std)


@register("pretrained", "none")
def not_pretrained(backbone: nn.Module, model: str) -> None:
    return None


@register("pretrained", "imagenet")
def imagenet_weights(backbone: nn.Module, model: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """torchvision's ImageNet weights of ``model`` (resnet18 or resnet34) into the backbone; the model then
    normalizes like ImageNet."""
    from .pretrained import IMAGENET_MEAN, IMAGENET_STD, copy_backbone, imagenet_state

    copy_backbone(imagenet_state(model), backbone)
    return IMAGENET_MEAN, IMAGENET_STD


# ---------------------------------------------------------------- configurable CNN
@register("backbone", "cnn")
def cnn(in_channels: int, image_size: int, *, filters: tuple[int, ...], activation: ActivationFactory,
        batchnorm: bool, dropout: float) -> nn.Module:
    """The CIFAR-10 optimization study's CNN: conv blocks, then fully connected 512 -> 256 (features)."""
    layers, c, size = [], in_channels, image_size
    for f in filters:
        layers += [nn.Conv2d(c, f, 3, padding=1, bias=not batchnorm), _norm(batchnorm, f), activation()]
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        c = f
    layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * size * size, 512), activation(),
               nn.Dropout(dropout), nn.Linear(512, 256), activation(), nn.Dropout(dropout)]
    return _features(layers, 256)


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


@register("stem", "cifar")
def cifar_stem(in_channels: int, width: int, batchnorm: bool, act: ActivationFactory) -> list[nn.Module]:
    """3x3 convolution, stride 1: small images (32 px and below) keep their resolution."""
    return [nn.Conv2d(in_channels, width, 3, 1, 1, bias=not batchnorm), _norm(batchnorm, width), act()]


@register("stem", "imagenet")
def imagenet_stem(in_channels: int, width: int, batchnorm: bool, act: ActivationFactory) -> list[nn.Module]:
    """7x7 convolution, stride 2, then 3x3 max-pool, stride 2 (He et al.; torchvision's layout): 4x smaller maps."""
    return [nn.Conv2d(in_channels, width, 7, 2, 3, bias=not batchnorm), _norm(batchnorm, width), act(),
            nn.MaxPool2d(3, 2, 1)]


def _resnet(block, depths, in_channels: int, width: int, batchnorm: bool, act: ActivationFactory,
            stem: str = "cifar") -> nn.Module:
    layers = registry("stem").lookup(stem)(in_channels, width, batchnorm, act)
    cin = width
    for i, n in enumerate(depths):
        planes = width * 2**i
        for j in range(n):
            layers.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1, batchnorm, act))
            cin = planes * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return _features(layers, cin)


@register("backbone", "resnet18")
def resnet18(in_channels: int, image_size: int, *, width: int, batchnorm: bool, activation: ActivationFactory,
             stem: str) -> nn.Module:
    return _resnet(BasicBlock, (2, 2, 2, 2), in_channels, width, batchnorm, activation, stem)


@register("backbone", "resnet34")
def resnet34(in_channels: int, image_size: int, *, width: int, batchnorm: bool, activation: ActivationFactory,
             stem: str) -> nn.Module:
    return _resnet(BasicBlock, (3, 4, 6, 3), in_channels, width, batchnorm, activation, stem)


@register("backbone", "resnet50")
def resnet50(in_channels: int, image_size: int, *, width: int, batchnorm: bool, activation: ActivationFactory,
             stem: str) -> nn.Module:
    return _resnet(Bottleneck, (3, 4, 6, 3), in_channels, width, batchnorm, activation, stem)


@register("backbone", "resnet_3stage")
def resnet_3stage(in_channels: int, image_size: int, *, width: int, batchnorm: bool,
                  activation: ActivationFactory) -> nn.Module:
    """Seed 003's ResNet for its AdamW run (95.22 %): a 3x3 stem and three stages of two basic blocks at
    width, 2 width and 4 width (64-128-256), global average pooling; features: 4 width."""
    return _resnet(BasicBlock, (2, 2, 2), in_channels, width, batchnorm, activation, "cifar")


# ---------------------------------------------------------------- VGG-A (VGG-11)
@register("backbone", "vgg11")
def vgg11(in_channels: int, image_size: int, *, width: int, batchnorm: bool, activation: ActivationFactory,
          dropout: float) -> nn.Module:
    """VGG-A with or without BatchNorm; pooling stops once the feature map is 1x1; features: 512."""
    cfg = [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"]
    layers, c, size = [], in_channels, image_size
    for v in cfg:
        if v == "M":
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            continue
        out = width * v
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=not batchnorm), _norm(batchnorm, out), activation()]
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 512), activation(), nn.Dropout(dropout)]
    return _features(layers, 512)


__all__ = ["Network", "Head", "LinearHead", "StepOutput", "build_network", "BACKBONES", "HEADS", "ACTIVATIONS",
           "MODELS"]
