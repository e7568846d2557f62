"""ImageNet weights from torchvision for our ResNet-18 and ResNet-34 (``pretrained: imagenet``).

torchvision's ResNet-18 / -34 and ours register their layers in the same order (stem conv, stem
BN, then per block conv1, bn1, conv2, bn2, shortcut conv, shortcut BN), so the backbone's
tensors are copied in order, each shape checked, whatever the two call their modules. The
classifier (``fc``) is not copied: the head is built for the dataset's classes. The weights
expect ImageNet's normalization and RGB input, so a pretrained model normalizes with
``IMAGENET_MEAN`` / ``IMAGENET_STD`` and sees 3 channels (grayscale data is replicated).

The weights come from torchvision's cache (``$TORCH_HOME/hub/checkpoints``, default
``~/.cache/torch/hub/checkpoints``), downloaded there on first use; where that cannot happen
the error says which file to put where.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .checkpoint import read_checkpoint
from .registry import declare

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedUnavailable(RuntimeError):
    """The pretrained weights are neither cached nor downloadable; the message says how to get them."""


# Our backbone name -> torchvision's weights enum (IMAGENET1K_V1 of each: what seed 004 fine-tunes for ResNet-34).
WEIGHTS = declare("imagenet_weights", {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights"})


def _weights(model: str = "resnet18"):
    from .torchvision_compat import torchvision

    return getattr(torchvision.models, WEIGHTS[model]).IMAGENET1K_V1


def cache_path(model: str = "resnet18") -> Path:
    """Where torchvision keeps (and we look for) the model's ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights(model).url).name


def imagenet_state(model: str = "resnet18") -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state dict of ``model`` (a key of ``WEIGHTS``): from the cache, else downloaded."""
    path = cache_path(model)
    if not path.is_file():
        url = _weights(model).url
        try:
            torch.hub.download_url_to_file(url, str(path.with_suffix(".partial")), progress=False)
            path.with_suffix(".partial").replace(path)
        except Exception as e:  # noqa: BLE001 - any network / filesystem failure means the same to the user
            raise PretrainedUnavailable(
                f"pretrained: imagenet needs torchvision's {model} weights, which could not be fetched "
                f"({type(e).__name__}: {e}). Download {url} on a machine with network access and put it "
                f"at {path} (or set TORCH_HOME to a folder whose hub/checkpoints holds it)."
            ) from None
    return read_checkpoint(path, needs=())


def imagenet_resnet18_state() -> dict[str, torch.Tensor]:
    return imagenet_state("resnet18")


def copy_backbone(src: dict[str, torch.Tensor], backbone: nn.Module, skip_prefix: str = "fc.") -> int:
    """Copy ``src``'s tensors (except ``skip_prefix``) into ``backbone``'s state, in order; returns how many.

    A shape mismatch, or a different tensor count, is an error.
    """
    src_items = [(k, v) for k, v in src.items() if not k.startswith(skip_prefix)]
    dst = backbone.state_dict()
    if len(src_items) != len(dst):
        raise ValueError(f"pretrained weights have {len(src_items)} backbone tensors, the model {len(dst)}: "
                         "pretrained: imagenet fits resnet18 / resnet34 with the imagenet stem, width 64 and BatchNorm")
    new = {}
    for (sk, sv), (dk, dv) in zip(src_items, dst.items()):
        if sv.shape != dv.shape:
            raise ValueError(f"pretrained tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        new[dk] = sv.to(dv.dtype)
    backbone.load_state_dict(new)
    return len(new)
