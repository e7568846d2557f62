"""The training configuration: one typed object, validated at construction.

Unknown keys and bad values raise one ``ConfigError`` that lists every problem with the
valid choices, so a typo in a study file or a notebook fails before any work starts.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .data import DATASETS
from .losses import LOSSES
from .models import ACTIVATIONS, MODELS
from .optim import OPTIMIZERS, SCHEDULERS


class ConfigError(ValueError):
    """A configuration is invalid; the message lists each problem on its own line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid training config:\n" + "\n".join(f"  - {p}" for p in problems))


def _one_of(value: str, valid, what: str) -> str:
    if value not in valid:
        raise ValueError(f"unknown {what} '{value}'; choose one of: {', '.join(sorted(valid))}")
    return value


ADV_MODES = ("none", "fgsm_rs", "pgd", "gairat")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    # data
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    split_seed: int = 0
    max_train_samples: int | None = Field(None, gt=0)
    image_size: int | None = Field(None, gt=0, description="resize images to this size (default: dataset's)")
    channels: Literal[1, 3] | None = Field(None, description="force grayscale (1) or RGB (3)")
    augment: bool = True
    crop_padding: int | None = Field(None, ge=0, description="default: 4 from 32px, 2 from 16px, else 0")

    # model
    model: str = "cnn"
    filters: tuple[int, ...] = (32, 64, 128)
    activation: str = "relu"
    leaky_slope: float = Field(0.01, ge=0.0)
    batchnorm: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    width: int = Field(64, gt=0, description="base width of ResNet / VGG")

    # loss
    loss: str = "cross_entropy"
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    focal_alpha: float = Field(1.0, gt=0.0)
    focal_gamma: float = Field(2.0, ge=0.0)

    # optimization
    optimizer: Literal["sgd", "adam", "adamw", "sign_sgd"] = "sgd"
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0.0)
    l1: float = Field(0.0, ge=0.0)
    grad_clip: float | None = Field(None, gt=0.0)
    scheduler: Literal["none", "step", "plateau", "cosine", "onecycle"] = "cosine"
    step_size: int = Field(30, gt=0)
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    plateau_factor: float = Field(0.1, gt=0.0, lt=1.0)
    plateau_patience: int = Field(5, ge=0)
    warmup_epochs: int = Field(0, ge=0)
    swa: bool = False
    swa_start: int | None = Field(None, ge=0, description="epoch from which weights are averaged (default: last 25%)")
    swa_lr: float | None = Field(None, gt=0.0)

    # adversarial training (pixel-space L-inf eps)
    adv_mode: Literal["none", "fgsm_rs", "pgd", "gairat"] = "none"
    adv_eps: float = Field(0.0, ge=0.0, le=1.0)
    adv_steps: int = Field(10, gt=0)
    adv_step_size: float | None = Field(None, gt=0.0, description="default: 1.25 eps (FGSM-RS), 2.5 eps/steps (PGD)")
    adv_beta: float = Field(1.0, ge=0.0, le=1.0, description="weight of the adversarial loss vs the clean loss")
    gairat_lambda: float = -1.0
    gairat_burn_in: int = Field(0, ge=0, description="epochs of plain PGD-AT before GAIRAT reweighting")

    # robustness evaluation, reported every epoch
    eval_eps: tuple[float, ...] = ()
    eval_pgd_steps: int = Field(20, gt=0)
    eval_samples: int = Field(1000, gt=0, description="validation samples used for the robust evaluation")

    # loop
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(1024, gt=0)
    seed: int = 0
    device: str = "auto"
    amp: bool | None = Field(None, description="bfloat16 autocast; default on for CUDA")
    channels_last: bool | None = Field(None, description="default on for CUDA")

    @field_validator("dataset", "model", "activation", "loss")
    @classmethod
    def _registered(cls, v, info: ValidationInfo):
        """Names checked against the live registries, so a newly registered entry is valid at once."""
        registry = {"dataset": DATASETS, "model": MODELS, "activation": ACTIVATIONS, "loss": LOSSES}[info.field_name]
        return _one_of(v, registry, info.field_name)

    @field_validator("filters")
    @classmethod
    def _filters(cls, v):
        if not v or any(f <= 0 for f in v):
            raise ValueError("filters must be a non-empty list of positive integers")
        return v

    @field_validator("eval_eps")
    @classmethod
    def _eval_eps(cls, v):
        if any(not 0.0 <= e <= 1.0 for e in v):
            raise ValueError("eval_eps values are pixel-space eps in [0, 1]")
        return tuple(sorted(v))

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        if v not in ("auto", "cpu") and not v.startswith("cuda") and v != "mps":
            raise ValueError(f"unknown device '{v}'; choose one of: auto, cpu, cuda, cuda:N, mps")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.scheduler in ("plateau", "onecycle") and self.warmup_epochs:
            raise ValueError(f"warmup_epochs is not supported with scheduler '{self.scheduler}'")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        if self.swa and self.swa_start is not None and self.swa_start >= self.epochs:
            raise ValueError(f"swa_start ({self.swa_start}) must be < epochs ({self.epochs}): SWA would never start")
        if self.adv_mode != "none" and self.adv_eps <= 0:
            raise ValueError(f"adv_mode '{self.adv_mode}' needs adv_eps > 0")
        return self

    # ------------------------------------------------------------ construction helpers
    @classmethod
    def from_dict(cls, d: dict[str, Any] | None = None, **overrides) -> "TrainConfig":
        d = {**(d or {}), **overrides}
        problems = []
        for key in d:
            if key not in cls.model_fields:
                near = difflib.get_close_matches(key, cls.model_fields, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                problems.append(f"unknown key '{key}'{hint}; valid keys: {', '.join(cls.model_fields)}")
        try:
            cfg = cls(**{k: v for k, v in d.items() if k in cls.model_fields})
        except ValidationError as e:
            problems += [format_error(err) for err in e.errors()]
            cfg = None
        if problems:
            raise ConfigError(problems)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def format_error(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg} (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else f"{loc}: {msg}"


def field_names() -> list[str]:
    return list(TrainConfig.model_fields)


__all__ = ["TrainConfig", "ConfigError", "ADV_MODES", "OPTIMIZERS", "SCHEDULERS", "field_names"]
