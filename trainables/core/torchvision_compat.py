"""Import torchvision through here, never directly.

PyPI's torchvision wheels are CUDA builds. Against a CPU-only torch their compiled
extension cannot load, and ``import torchvision`` then dies in ``_meta_registrations``
with ``operator torchvision::nms does not exist``. Only in that case we define the
``torchvision::`` operator schemas first (with kernels that raise a clear error), so
datasets, transforms.v2 and models import and work. With a matching build this module
does nothing but import torchvision.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

# The operators torchvision's _meta_registrations.py registers fakes for (from torchvision/csrc/ops).
OP_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qroi_align": "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point, "
    "float rois_scale, int rois_zero_point, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "roi_align": "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward": "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, "
    "SymInt width, int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align": "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward": "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, "
    "float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
    "SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "roi_pool": "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward": "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, "
    "SymInt width) -> Tensor",
    "ps_roi_pool": "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward": "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, "
    "float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, "
    "SymInt channels, SymInt height, SymInt width) -> Tensor",
    "deform_conv2d": "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, "
    "SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward": "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, "
    "Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, "
    "SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, "
    "bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
}

_stub_library = None  # keeps the stub definitions alive for the life of the process


def ops_registered() -> bool:
    """True when the ``torchvision::`` operators exist (a working compiled extension)."""
    try:
        torch.ops.torchvision.nms.default  # noqa: B018 - attribute access is the check
        return True
    except (AttributeError, RuntimeError):
        return False


def _try_load_extension() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    for location in spec.submodule_search_locations:
        for lib in Path(location).glob("_C*.so"):
            try:
                torch.ops.load_library(str(lib))
            except (OSError, RuntimeError):
                return False
    return ops_registered()


def _unavailable(name: str):
    def kernel(*args, **kwargs):
        raise RuntimeError(
            f"torchvision::{name} is unavailable: the installed torchvision's compiled ops do not match "
            f"this torch ({torch.__version__}). Datasets, transforms and models work; detection ops do not. "
            "Install the torchvision build that matches your torch to use them."
        )

    return kernel


def install_stub_ops() -> bool:
    """Define the torchvision operator schemas if they are missing. Returns True if it defined them."""
    global _stub_library
    if ops_registered():
        return False
    lib = torch.library.Library("torchvision", "DEF")
    for name, schema in OP_SCHEMAS.items():
        lib.define(schema)
        lib.impl(name, _unavailable(name), "CompositeExplicitAutograd")
    _stub_library = lib
    return True


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` work. Returns True when the stub operators were needed."""
    if ops_registered() or _try_load_extension():
        return False
    return install_stub_ops()


STUBBED = ensure_torchvision_importable()

import torchvision  # noqa: E402
import torchvision.transforms.v2  # noqa: E402,F401

__all__ = ["torchvision", "STUBBED", "ops_registered", "install_stub_ops", "ensure_torchvision_importable"]
