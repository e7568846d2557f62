"""The training configuration: one typed object, validated at construction.

Unknown keys and bad values raise one ``ConfigError`` that lists every problem with the
valid choices, so a typo in a study file or a notebook fails before any work starts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any, Callable, Literal, Mapping

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .catalog import entries
from .domain_names import check_targets, class_selection, dataset_info, parse_name
from .steps import DEFAULT_STEPS

Problem = tuple[tuple, str]  # (location: the key path in the config, () for a rule across fields; message)


def render(problem: Problem) -> str:
    """``key: message`` (``config: message`` for a rule across fields): one line a person reads."""
    loc, msg = problem
    return f"{'.'.join(map(str, loc)) or 'config'}: {msg}"


def _pixels(value: Any) -> Any:
    """A pixel-space amount written as a fraction of the 8-bit range, ``"2/255"`` (how the seeds print eps and
    steps), becomes its float; anything else is left for the field's own type to check."""
    if isinstance(value, str) and "/" in value:
        try:
            return float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"'{value}' is not a number or a fraction like 2/255") from None
    return value


def _pixels_each(value: Any) -> Any:
    return [_pixels(v) for v in value] if isinstance(value, (list, tuple)) else value


Pixels = BeforeValidator(_pixels)


class ConfigError(ValueError):
    """A configuration is invalid. ``problems`` holds (location, message) pairs, so a caller places each
    one (a study file at its key's line) without re-parsing text; the message lists one per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("invalid training config:\n" + "\n".join(f"  - {render(p)}" for p in problems))


def _one_of(value: str, valid, what: str) -> str:
    if value not in valid:
        raise ValueError(f"unknown {what} '{value}'; choose one of: {', '.join(valid)}")
    return value


def _on_off(value: Any) -> str:
    return "on" if value else "off"


@dataclass(frozen=True)
class Switch:
    """A config field whose value picks one entry of a registry (``key`` maps the value to the name).

    The fields that act under a value are the chosen builder's keyword-only parameters.
    ``when`` turns a registry name back into the value a study's ``when:`` would test
    (None: the switch cannot be written as a ``when:`` condition, e.g. a non-empty eval_eps).
    """

    kind: str
    key: Callable[[Any], str] = str
    when: Callable[[str], Any] | None = lambda name: name


ON_OFF = dict(key=_on_off, when=lambda name: name == "on")


def _augment_name(value: Any) -> str:
    """``augment``: true (crops and flips: ``on``), false (``off``) or a named augmentation (``affine``)."""
    return value if isinstance(value, str) else _on_off(value)


def _augment_when(name: str) -> Any:
    return {"on": True, "off": False}.get(name, name)

# The one table of switches: every selectable component and every on/off section.
SWITCHES: dict[str, Switch] = {
    "model": Switch("backbone"),
    "head": Switch("head"),
    "activation": Switch("activation"),
    "loss": Switch("loss"),
    "optimizer": Switch("optimizer"),
    "scheduler": Switch("scheduler"),
    "adv_mode": Switch("adv_mode"),
    "swa": Switch("swa", **ON_OFF),
    "augment": Switch("augment", key=_augment_name, when=_augment_when),
    "eval_eps": Switch("robust_eval", key=_on_off, when=None),
    "pretrained": Switch("pretrained"),
    "eval_datasets": Switch("xdomain_eval", key=_on_off, when=None),
    "finetune_dataset": Switch("finetune", key=_on_off, when=None),
    "freeze": Switch("freeze"),
    "circle_weight": Switch("circle", key=_on_off, when=None),
    "landscape_probe": Switch("landscape", **ON_OFF),
}
# Fields the training loop itself reads: they act whatever else is chosen, even if a builder declares them.
LOOP_FIELDS = frozenset({
    "dataset", "data_dir", "download", "val_fraction", "split_seed", "max_train_samples", "image_size", "channels",
    "epochs", "batch_size", "eval_batch_size", "seed", "device", "amp", "channels_last", "grad_clip",
    "model", "head", "loss", "optimizer", "scheduler", "adv_mode", "swa", "augment", "eval_eps", "lr",
    "pretrained", "eval_datasets", "finetune_dataset", "circle_weight", "init_from", "landscape_probe",
})


class TrainConfig(BaseModel):
    """Every training field, flat (study files stay flat). Which fields *act* follows from the choices:
    see ``SWITCHES`` and ``acting_fields``; an explicitly set field that does not act is an error."""

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
    augment: bool | str = Field(True, description="true: random crops and the dataset's flips; false: none; "
                                "affine: the RegNet thesis's rotation / shear / shift / zoom (section 3.4.3)")
    crop_padding: int | None = Field(None, ge=0, description="default: 4 from 32px, 2 from 16px, else 0")
    classes: tuple[int, ...] | None = Field(None, description="train and evaluate on these classes only, "
                                            "relabelled 0..k-1 in this order")
    class_groups: tuple[tuple[int, ...], ...] | None = Field(None, description="label = index of the group holding "
                                                             "the class; classes outside every group dropped")

    # cross-domain evaluation: datasets or corruption domains (fashion_mnist:rotate@3), each reported every epoch
    eval_datasets: tuple[str, ...] = ()
    xdomain_normalize: str = Field("source", description="targets normalized with the model's (source) statistics, "
                                   "or with their own dataset's (own)")
    color_jitter: float = Field(0.0, ge=0.0, lt=1.0, description="RGB only: brightness, contrast, saturation x U[1-s, 1+s]")

    # model = backbone + head
    model: str = "cnn"
    head: str = "linear"
    filters: tuple[int, ...] = (32, 64, 128)
    activation: str = "relu"
    leaky_slope: float = Field(0.1, ge=0.0, description="leaky_relu's slope for negative inputs")
    batchnorm: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    width: int = Field(64, gt=0, description="base width of ResNet / VGG")
    # the Gaussian latent head (RegNet): fields act only with head: gaussian
    mu_t: float = Field(70.0, gt=0.0, description="target mean: class c maps to mu_t * e_c")
    sigma_t: float = Field(1.0, gt=0.0, description="target std (covariance sigma_t^2 I)")
    regnet_loss: str = Field("covariance", description="covariance (KL with full Sigma_O) or simplified (diagonal)")
    kurtosis_factor: float = Field(0.2, ge=0.0, description="F_k, weight of the kurtosis term")
    kurtosis_penalty: str = Field("linear", description="penalty(K - 3): linear (as printed; minimum at K = 1), "
                                  "abs or square (minimum at K = 3)")
    kurtosis_estimator: str = Field("population", description="per-batch K: population (the thesis's eq. 2.5, "
                                    "biased low: 2.14 at 6 samples per class) or unbiased (G2 + 3, mean 3)")
    stem: str = Field("cifar", description="ResNet stem: cifar (3x3, stride 1) or imagenet (7x7 stride 2 + max-pool)")
    pretrained: str = Field("none", description="imagenet: torchvision's ResNet-18 or ResNet-34 weights (needs RGB, "
                            "imagenet stem)")

    # loss: a per-sample term + batch-level terms
    loss: str = "cross_entropy"
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    label_smoothing_to: str = Field("all", description="where eps goes: all (eps/K to every class) or "
                                    "others (eps/(K-1) to the other classes)")
    focal_alpha: float = Field(1.0, gt=0.0)
    focal_gamma: float = Field(2.0, ge=0.0)
    l1: float = Field(0.0, ge=0.0, description="weight of the L1 batch term")
    circle_weight: float = Field(0.0, ge=0.0, description="weight of the Circle-loss batch term (0: off)")
    circle_m: float = Field(0.25, ge=0.0, le=1.0, description="Circle loss relaxation margin m (paper: 0.25)")
    circle_gamma: float = Field(256.0, gt=0.0, description="Circle loss scale gamma (paper: 256)")

    # optimization
    optimizer: str = "sgd"
    lr: float = Field(0.05, gt=0.0)
    momentum: float | None = Field(None, ge=0.0, lt=1.0, description="default: 0.9 for SGD, 0 for sign-SGD")
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0.0)
    grad_clip: float | None = Field(None, gt=0.0)
    scheduler: str = "cosine"
    step_size: int = Field(20, gt=0, description="StepLR period in epochs")
    milestones: tuple[int, ...] = Field((1000, 5000, 10000, 20000), description="multistep: iterations (batches) "
                                        "at which the lr is multiplied by gamma")
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    min_lr: float = Field(1e-5, ge=0.0, description="cosine's final lr")
    milestone_fractions: tuple[float, ...] = Field((0.5, 0.75), description="multistep_fraction: lr x gamma at these "
                                                   "fractions of the run (0.5: halfway)")
    plateau_factor: float = Field(0.1, gt=0.0, lt=1.0)
    plateau_patience: int = Field(5, ge=0)
    plateau_threshold: float = Field(1e-3, ge=0.0, description="relative improvement that counts")
    plateau_cooldown: int = Field(2, ge=0, description="epochs to wait after a reduction")
    warmup_epochs: int = Field(0, ge=0)
    swa: bool = False
    swa_start: int | None = Field(None, ge=0, description="epoch from which weights are averaged (default: last 25%)")
    swa_lr: float | None = Field(None, gt=0.0)

    # adversarial training (pixel-space L-inf eps)
    adv_mode: str = "none"
    adv_eps: Annotated[float, Pixels] = Field(0.0, ge=0.0, le=1.0, description="a float or a fraction: 8/255")
    adv_steps: int = Field(10, gt=0)
    adv_step_size: Annotated[float | None, Pixels] = Field(
        None, gt=0.0, description=f"default: {DEFAULT_STEPS['fgsm_rs']:g} eps (FGSM-RS), {DEFAULT_STEPS['pgd']:g} "
        "eps/steps (PGD); a float or a fraction: 2/255")
    pgd_start: str = Field("random", description="PGD-AT / GA-PGD start: random (Madry; official GAIRAT code) or "
                           "input (x, as the GAIRAT paper's Algorithm 1 prints it)")
    adv_beta: float = Field(1.0, ge=0.0, le=1.0, description="weight of the adversarial loss vs the clean loss")
    gairat_lambda: float = -1.0
    gairat_burn_in: int = Field(0, ge=0, description="epochs of plain PGD-AT before GAIRAT reweighting")
    adv_prob: float = Field(1.0, gt=0.0, le=1.0, description="per-batch probability of training on the adversarial batch")

    # robustness evaluation, reported every epoch
    eval_eps: Annotated[tuple[float, ...], BeforeValidator(_pixels_each)] = ()
    eval_pgd_steps: int = Field(20, gt=0)
    eval_samples: int = Field(1000, gt=0, description="validation samples used for the robust evaluation")
    eval_pgd_step_size: Annotated[float | None, Pixels] = Field(
        None, gt=0.0, description="evaluation PGD step, absolute (2/255): a PGD-steps sweep then changes only the "
        f"steps (default {DEFAULT_STEPS['pgd']:g} eps / steps)")
    fgsm_loss: str = Field("ce", description="what the evaluation FGSM differentiates: ce (of the scores), margin "
                           "(max_{j!=y} s_j - s_y) or training (the head's training loss; the regnet family's default)")

    # transfer: start from weights, then fine-tune on k labelled samples per class of a target domain
    init_from: str | None = Field(None, description="a checkpoint path (a trainer checkpoint or a state dict)")
    finetune_dataset: str | None = Field(None, description="fine-tune on this dataset / domain after pretraining")
    finetune_per_class: int = Field(10, gt=0, description="k labelled target samples per class")
    finetune_epochs: int = Field(5, gt=0, description="the last epochs of the run, spent fine-tuning")
    finetune_lr: float = Field(0.01, gt=0.0)
    freeze: str = Field("trunk", description="frozen while fine-tuning: trunk | all_but_last_block | none")

    # BatchNorm analysis (seed 003, Santurkar et al. 2018): landscape_loss_range / landscape_grad_change per epoch
    landscape_probe: bool = Field(False, description="measure loss-landscape smoothness and gradient "
                                  "predictiveness along the gradient at the end of every epoch")

    # loop
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(1024, gt=0)
    seed: int = 0
    device: str = "auto"
    amp: bool | None = Field(None, description="bfloat16 autocast; default on for CUDA")
    channels_last: bool | None = Field(None, description="default on for CUDA and CPU")

    @field_validator("model", "head", "activation", "loss", "optimizer", "scheduler", "adv_mode", "pretrained",
                     "freeze")
    @classmethod
    def _registered(cls, v, info: ValidationInfo):
        """Names checked against the registries' entries (``catalog.entries``: live ones win), so a newly
        registered entry is valid at once."""
        return _one_of(v, entries(SWITCHES[info.field_name].kind), info.field_name)

    @field_validator("augment")
    @classmethod
    def _augment(cls, v):
        if isinstance(v, str) and (v in ("on", "off") or v not in entries("augment")):
            named = [n for n in entries("augment") if n not in ("on", "off")]
            raise ValueError(f"augment is true, false or one of: {', '.join(named)}")
        return v

    @field_validator("stem")
    @classmethod
    def _stem(cls, v):
        return _one_of(v, entries("stem"), "stem")

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, v):
        """A registered dataset or a corruption domain of one (``fashion_mnist:rotate@3``)."""
        parse_name(v, entries("dataset"))
        return v

    @field_validator("eval_datasets", "finetune_dataset")
    @classmethod
    def _targets(cls, v, info: ValidationInfo):
        """Targets: datasets or domains whose labels mean what the source's mean (checked here, at their key)."""
        if v is None:
            return v
        names = [v] if isinstance(v, str) else list(v)
        for name in names:
            parse_name(name, entries("dataset"))
        if "dataset" in info.data:
            check_targets(info.data["dataset"], names)
        return v if isinstance(v, str) else tuple(v)

    @field_validator("color_jitter")
    @classmethod
    def _rgb_only(cls, v, info: ValidationInfo):
        if v > 0 and "dataset" in info.data:
            channels = info.data.get("channels") or dataset_info(info.data["dataset"]).channels
            if channels != 3:
                raise ValueError(f"color_jitter needs RGB images: '{info.data['dataset']}' has {channels} channel(s) "
                                 "(set channels: 3, or drop color_jitter)")
        return v

    @field_validator("milestone_fractions")
    @classmethod
    def _milestone_fractions(cls, v):
        if not v or any(not 0.0 < f < 1.0 for f in v):
            raise ValueError("milestone_fractions are fractions of the run, each in (0, 1)")
        return tuple(sorted(v))

    @field_validator("regnet_loss", "kurtosis_penalty", "kurtosis_estimator", "fgsm_loss", "pgd_start",
                     "label_smoothing_to", "xdomain_normalize")
    @classmethod
    def _named_choices(cls, v, info: ValidationInfo):
        return _one_of(v, entries(info.field_name), info.field_name)

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, v):
        if not v or any(m <= 0 for m in v) or list(v) != sorted(set(v)):
            raise ValueError("milestones must be increasing positive iteration counts")
        return v

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
        acting = acting_fields(self)
        if "warmup_epochs" in acting and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        if self.swa and self.swa_start is not None and self.swa_start >= self.epochs:
            raise ValueError(f"swa_start ({self.swa_start}) must be < epochs ({self.epochs}): SWA would never start")
        if self.adv_mode != "none" and self.adv_eps <= 0:
            raise ValueError(f"adv_mode '{self.adv_mode}' needs adv_eps > 0")
        if self.classes is not None or self.class_groups is not None:
            class_selection(dataset_info(self.dataset).num_classes, self.classes, self.class_groups)  # raises if invalid
        self._check_domains()
        return self

    def _check_domains(self) -> None:
        """Fine-tuning fits in the run; pretrained weights fit the model and see RGB."""
        if self.finetune_dataset is not None:
            if self.finetune_epochs > self.epochs or (self.finetune_epochs == self.epochs and not self.init_from):
                raise ValueError(f"finetune_epochs ({self.finetune_epochs}) are the last epochs of the run: they must "
                                 f"be < epochs ({self.epochs}), or = epochs with init_from (no pretraining)")
        channels = self.channels or dataset_info(self.dataset).channels
        if self.pretrained == "imagenet":
            wrong = [f"{k} {getattr(self, k)} (needs {v})" for k, v in
                     (("stem", "imagenet"), ("width", 64), ("batchnorm", True)) if getattr(self, k) != v]
            weights = entries("imagenet_weights")
            if self.model not in weights:
                wrong.insert(0, f"model {self.model} (needs one of {', '.join(weights)})")
            if channels != 3:
                wrong.append(f"channels {channels} (needs 3: the weights expect RGB)")
            if wrong:
                raise ValueError("pretrained: imagenet loads torchvision's ImageNet ResNet-18 or -34 weights; "
                                 "this config has " + ", ".join(wrong))

    # ------------------------------------------------------------ construction helpers
    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None = None, *, strict: bool = True, **overrides) -> "TrainConfig":
        """Validate a dict (plus overrides). With ``strict`` (the default), an explicitly given field
        that has no effect under the other choices is an error (``inert_problems``)."""
        d = {**(d or {}), **overrides}
        problems = []
        for key in d:
            if key not in cls.model_fields:
                near = difflib.get_close_matches(key, cls.model_fields, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                problems.append(((key,), f"unknown key '{key}'{hint}; valid keys: {', '.join(cls.model_fields)}"))
        try:
            cfg = cls(**{k: v for k, v in d.items() if k in cls.model_fields})
        except ValidationError as e:
            problems += [format_error(err) for err in e.errors()]
            cfg = None
        if cfg is not None and strict:
            problems += inert_problems(cfg, cfg.model_fields_set)
        if problems:
            raise ConfigError(problems)
        return cfg

    def with_overrides(self, **overrides) -> "TrainConfig":
        """A validated copy: the explicitly set fields plus ``overrides`` (``model_copy`` would skip validation)."""
        return TrainConfig.from_dict({**self.explicit(), **overrides})

    def explicit(self) -> dict[str, Any]:
        """The explicitly set fields, as given."""
        return {k: getattr(self, k) for k in self.model_fields_set}

    def to_dict(self) -> dict[str, Any]:
        """The fields that act (defaults included), JSON-ready: what a run records and re-reads strictly."""
        acting = acting_fields(self)
        return {k: v for k, v in self.model_dump(mode="json").items() if k in acting}


# ---------------------------------------------------------------- which fields act
def _get(values: Any, name: str) -> Any:
    if isinstance(values, Mapping):
        return values[name] if name in values else TrainConfig.model_fields[name].default
    return getattr(values, name)


def governed_fields() -> set[str]:
    """Fields some switch's entries declare: whether they act depends on the choices."""
    return {f for sw in SWITCHES.values() for f in entries(sw.kind).all_fields()} - LOOP_FIELDS


def acting_fields(values: Any) -> set[str]:
    """The fields that act under ``values`` (a ``TrainConfig`` or a dict; missing keys take defaults).

    Fields no switch governs always act; a governed field acts once an acting switch's chosen
    builder declares it (a fixpoint: ``leaky_slope`` acts when ``activation`` does and names
    ``leaky_relu``, and ``activation`` acts when the chosen backbone declares it).
    """
    acting = set(TrainConfig.model_fields) - governed_fields()
    changed = True
    while changed:
        changed = False
        for name, sw in SWITCHES.items():
            if name not in acting:
                continue
            entry = sw.key(_get(values, name))
            reg = entries(sw.kind)
            new = set(reg.fields(entry)) - acting if entry in reg else set()
            if new:
                acting |= new
                changed = True
    return acting


def users_of(field: str) -> list[tuple[str, list[Any]]]:
    """For each switch whose entries declare ``field``: (switch field, the ``when:`` values that use it)."""
    out = []
    for name, sw in SWITCHES.items():
        reg = entries(sw.kind)
        using = [entry for entry in reg if field in reg.fields(entry)]
        if using and len(using) < len(reg):
            out.append((name, [sw.when(e) if sw.when else e for e in using]))
    return out


def _yaml(v: Any) -> str:
    return "true" if v is True else "false" if v is False else str(v)


def when_hint(field: str, values: Any) -> str:
    """Why ``field`` does not act under ``values`` and the ``when:`` that would condition it."""
    for name, using in users_of(field):
        sw = SWITCHES[name]
        current = _get(values, name)
        entry = sw.key(current)
        if field in entries(sw.kind).fields(entry) if entry in entries(sw.kind) else False:
            continue
        shown = f"{name} {_yaml(list(current) if isinstance(current, tuple) else current)}"
        if sw.when is None:
            return f"`{field}` has no effect with {shown}; it acts only when `{name}` is set (non-empty)"
        cond = _yaml(using[0]) if len(using) == 1 else "[" + ", ".join(_yaml(u) for u in using) + "]"
        return f"`{field}` has no effect with {shown}; condition it with `when: {{{name}: {cond}}}`"
    return f"`{field}` has no effect with this configuration"


def inert_problems(values: Any, given) -> list[Problem]:
    """One problem per field in ``given`` that does not act under ``values``: (field, why; the when: to add)."""
    acting = acting_fields(values)
    return [((f,), when_hint(f, values)) for f in given if f in TrainConfig.model_fields and f not in acting]


def format_error(err: dict) -> Problem:
    """A pydantic error as a problem; the value is shown unless the rule spans the whole config."""
    msg = err["msg"].removeprefix("Value error, ")
    shown = "input" in err and not isinstance(err["input"], dict)
    return tuple(err["loc"]), f"{msg} (got {err['input']!r})" if shown else msg


__all__ = ["TrainConfig", "ConfigError", "Problem", "render", "SWITCHES", "Switch", "LOOP_FIELDS", "acting_fields",
           "inert_problems", "when_hint", "users_of"]
