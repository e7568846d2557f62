"""The training core: pure PyTorch (no Ray, no MLflow). ``from trainables.core import train``.

Registration happens here (timm's way): importing these modules registers every component
(datasets, models, heads, losses and terms, optimizers, schedulers, adversarial modes, evaluators,
freeze modes), and Python runs this file before any ``trainables.core.X`` import, so the
registries are whole wherever the core is used.
"""

# isort: off
from . import adversarial, crossdomain, data, landscape, losses, models, optim, regnet, shakeshake, transfer  # noqa: F401
# isort: on

from .config import SWITCHES, ConfigError, TrainConfig, acting_fields
from .data import DATASETS, DatasetNotFound, DataSpec, load_data
from .finetune import TransferTrainer
from .losses import LOSSES, TERMS, Term
from .models import ACTIVATIONS, BACKBONES, HEADS, MODELS, Head, Network, StepOutput
from .registry import REGISTRIES, register, registry
from .run import make_trainer, train
from .train import CheckpointError, Trainer, TrainResult, build_model, evaluate, evaluate_split, load_model

__all__ = ["train", "Trainer", "TrainResult", "TrainConfig", "ConfigError", "evaluate", "evaluate_split", "load_model",
           "load_data", "DataSpec",
           "DatasetNotFound", "CheckpointError", "DATASETS", "MODELS", "BACKBONES", "HEADS", "LOSSES", "TERMS",
           "Term",
           "ACTIVATIONS", "build_model", "Network", "Head", "StepOutput", "register", "registry", "REGISTRIES",
           "SWITCHES", "acting_fields", "make_trainer", "TransferTrainer"]
