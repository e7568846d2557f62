"""The training core: pure PyTorch (no Ray, no MLflow). ``from trainables.core import train``."""

from .config import ConfigError, TrainConfig
from .data import DATASETS, DatasetNotFound, load_data
from .losses import LOSSES
from .models import ACTIVATIONS, MODELS, build_model
from .train import Trainer, TrainResult, evaluate, load_model, train

__all__ = ["train", "Trainer", "TrainResult", "TrainConfig", "ConfigError", "evaluate", "load_model",
           "load_data", "DatasetNotFound", "DATASETS", "MODELS", "LOSSES", "ACTIVATIONS", "build_model"]
