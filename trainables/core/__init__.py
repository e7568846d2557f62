"""The training core: pure PyTorch (no Ray, no MLflow). ``from trainables.core import train``.

The names below are found in their modules on first use (PEP 562 ``__getattr__``), so importing one
module of the core (``trainables.core.config`` to validate a study) does not import torch through
this file. Registration does not happen here: the registry loads the registering modules it names
(``registry.COMPONENTS``) the first time a registry is read or a component built.
"""

from __future__ import annotations

import importlib

from .registry import REGISTRIES, register, registry  # noqa: F401 - exported; torch-free (it imports no plugin)

_HOMES = {
    "config": ("SWITCHES", "ConfigError", "TrainConfig", "acting_fields"),
    "data": ("DATASETS", "DatasetNotFound", "DataSpec", "load_data"),
    "finetune": ("TransferTrainer",),
    "losses": ("LOSSES", "TERMS", "Term"),
    "models": ("ACTIVATIONS", "BACKBONES", "HEADS", "MODELS", "Head", "Network", "StepOutput"),
    "run": ("make_trainer", "train"),
    "trainer": ("CheckpointError", "Trainer", "TrainResult", "build_model", "evaluate", "evaluate_split", "load_model"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted([*_MODULE_OF, "REGISTRIES", "register", "registry"])


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
