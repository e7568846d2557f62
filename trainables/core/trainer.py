"""One training run, in plain PyTorch: ``train(config)``.

Data lives on the device as tensors, batches are index slices, augmentation is batched,
evaluation runs under ``torch.inference_mode()``. channels_last is on by default (on CPU too:
oneDNN's convolutions, pooling and BatchNorm are about 1.3x faster in that layout, see
docs/performance.md); bfloat16 autocast is on by default on CUDA (``amp: true`` on a CPU with
native bf16 roughly doubles a CPU epoch once combined with channels_last). Checkpoints hold
everything needed to continue a run at the next epoch with the same results as an uninterrupted
one (model, optimizer, scheduler, SWA state, history, random-number generators) and load with
``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from .checkpoint import CheckpointError, read_checkpoint
from .config import SWITCHES, TrainConfig
from .data import DataBundle, DataSpec, Split, load, norm_stats, subset_info
from .domain_names import dataset_info
from .infos import DatasetInfo
from .losses import build_terms
from .metric_names import (
    DEFAULT_OBJECTIVE,
    DIVERGED,
    EPOCH_TIME,
    LR,
    SAMPLES_PER_S,
    TEST_METRICS,
    TRAIN_ACC,
    TRAIN_LOSS,
    VAL_ACC,
    VAL_LOSS,
    VAL_NLL,
    term_metric,
)
from .models import Network
from .models import build_network as _build_network
from .optim import swa_start_epoch
from .registry import build
from .robustness import make_batch_loss

EpochCallback = Callable[[dict[str, float], "Trainer"], Any]
Evaluator = Callable[["Trainer"], dict[str, float]]  # per-epoch metrics a family adds
Finalizer = Callable[["Trainer"], None]  # runs once after the last epoch, before the final evaluation


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _on_off(v) -> str:
    return "on" if v else "off"


def build_data(cfg: TrainConfig, device: torch.device) -> DataBundle:
    return load(DataSpec.of(cfg), device)


def build_network(cfg: TrainConfig, data: DataBundle) -> Network:
    c, h, _ = data.shape
    return network_for(cfg, data.info, c, h)


def network_for(cfg: TrainConfig, info: DatasetInfo, channels: int, size: int) -> Network:
    """The configured model for ``channels`` x ``size`` x ``size`` images of dataset ``info`` (no data needed)."""
    mean, std = norm_stats(info, channels)
    return _build_network(cfg, in_channels=channels, num_classes=info.num_classes, image_size=size, mean=mean,
                          std=std)


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int, mean, std,
                **fields) -> Network:
    """A model without a dataset: ``build_model("cnn", ..., filters=(16, 32))`` (fields validated)."""
    cfg = TrainConfig.from_dict({"model": name, **fields})
    return _build_network(cfg, in_channels=in_channels, num_classes=num_classes, image_size=image_size, mean=mean,
                          std=std)


def swa_final(cfg: TrainConfig, epoch: int) -> bool:
    """Whether the SWA average is the run's model after ``epoch`` epochs: only once it has been completed
    (BatchNorm statistics recomputed) at the last epoch. Before that its BatchNorm buffers are stale."""
    return cfg.swa and epoch == cfg.epochs and epoch > swa_start_epoch(cfg.epochs, cfg.swa_start)


@torch.inference_mode()
def evaluate_split(model: nn.Module, split: Split, batch_size: int = 1024, loss_fn=None,
                   autocast=None) -> dict[str, float]:
    """``loss`` (the training criterion, 0 without one), ``acc`` and ``nll`` (plain cross-entropy of the
    scores: comparable across a loss search, unlike the criterion) on a split."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device)
    nll_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    for i in range(0, len(split), batch_size):
        x, y = split.x[i : i + batch_size], split.y[i : i + batch_size]
        with autocast or contextlib.nullcontext():
            scores = model(x)
        if loss_fn is not None:
            loss_sum += loss_fn(scores.float(), y).sum()
        nll_sum += nn.functional.cross_entropy(scores.float(), y, reduction="sum")
        correct += (scores.argmax(1) == y).sum()
    model.train(was_training)
    n = max(1, len(split))
    return {"loss": loss_sum.item() / n, "acc": correct.item() / n, "nll": nll_sum.item() / n}


def evaluate(model: nn.Module, split: Split, batch_size: int = 1024, loss_fn=None, autocast=None) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on a split."""
    m = evaluate_split(model, split, batch_size, loss_fn, autocast)
    return m["loss"], m["acc"]


def all_trainable(model: nn.Module) -> list[nn.Parameter]:
    """The default ``trainable`` hook: every parameter that requires grad (freeze by clearing requires_grad)."""
    return [p for p in model.parameters() if p.requires_grad]


def frozen_parts_eval(model: nn.Module) -> None:
    """The default ``train_mode`` hook: train mode, except that every module whose parameters are all
    frozen stays in eval mode, so a frozen part stays exactly frozen (BatchNorm statistics, dropout)."""
    model.train()
    for m in model.modules():
        params = list(m.parameters())
        if params and not any(p.requires_grad for p in params):
            m.eval()


@dataclass
class TrainResult:
    config: TrainConfig
    model: Network
    history: list[dict[str, float]]
    final: dict[str, float] = field(default_factory=dict)
    data_source: str = ""
    status: str = "completed"  # completed | stopped (on_epoch asked) | diverged
    reason: str = ""

    def best(self, metric: str = DEFAULT_OBJECTIVE, mode: str = "max") -> dict[str, float]:
        pick = max if mode == "max" else min
        return pick(self.history, key=lambda m: m[metric])


# What ``Trainer.fit`` reports every epoch whatever the config (``epoch`` aside); terms and evaluators add theirs.


class Trainer:
    """Holds one run's state; ``fit`` runs the remaining epochs.

    Hooks (attributes, set at construction or after):
    - ``trainable(model) -> parameters``: what the optimizer trains (freezing); default ``all_trainable``;
    - ``train_mode(model)``: puts the model in training mode; default ``frozen_parts_eval``;
    - ``evaluators``: callables ``(trainer) -> metrics`` run every epoch after validation (the robust
      evaluation is one when ``eval_eps`` is set);
    - ``finalizers``: callables ``(trainer) -> None`` run once after the last epoch, before the final
      evaluation (SWA's BatchNorm update is the first when ``swa`` is on);
    - ``step``: epochs completed over all phases (monotonic; reported as ``epoch``), while ``epoch``
      counts the current phase's epochs (what schedules and GAIRAT's burn-in see). ``new_phase``
      starts another phase (e.g. fine-tuning a head after pretraining).
    """

    def __init__(self, config: TrainConfig | dict, data: DataBundle | None = None, *,
                 trainable: Callable[[nn.Module], Iterable[nn.Parameter]] = all_trainable,
                 train_mode: Callable[[nn.Module], None] = frozen_parts_eval,
                 evaluators: Iterable[Evaluator] = (), finalizers: Iterable[Finalizer] = ()):
        self.cfg = cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        self.device = pick_device(cfg.device)
        cuda = self.device.type == "cuda"
        self.amp = cfg.amp if cfg.amp is not None else cuda
        self.channels_last = uses_channels_last(cfg, self.device)
        self.generator = torch.Generator().manual_seed(cfg.seed)  # batch order and augmentation
        self.data = data if data is not None else build_data(cfg, self.device)
        # The global RNG is the caller's: the model is initialized, and each epoch runs (dropout, attack
        # random starts), under a forked RNG whose state the trainer keeps and checkpoints.
        with self._fresh_rng(cfg.seed):
            self.model = build_network(cfg, self.data).to(self.device)
            self.rng = self._rng_state()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.trainable, self.train_mode = trainable, train_mode
        self.hflip = self.data.info.hflip
        self.epoch = 0  # epochs completed in this phase
        self.step = 0  # epochs completed over all phases
        self.phase = 0
        self.total_epochs = cfg.epochs  # every phase's epochs: the run is over when ``step`` reaches it
        self.history: list[dict[str, float]] = []
        self.status, self.reason = "completed", ""
        self.extra_evaluators, self.extra_finalizers = list(evaluators), list(finalizers)
        self._build(cfg)

    def _build(self, cfg: TrainConfig) -> None:
        """Every component the config names, each from its registry."""
        self.cfg = cfg
        self.loss_fn = build("loss", cfg.loss, cfg)
        self.terms = build_terms(cfg)
        self.batch_loss = make_batch_loss(cfg, self.model, self.loss_fn)
        self.optimizer = build("optimizer", cfg.optimizer, cfg, self.trainable_parameters())
        n = len(self.data.train)
        self.steps_per_epoch = n // cfg.batch_size + (1 if n % cfg.batch_size > 1 else 0)
        self.scheduler, self.per_batch = build("scheduler", cfg.scheduler, cfg, self.optimizer, cfg.epochs,
                                               self.steps_per_epoch)
        self.swa = build("swa", _on_off(cfg.swa), cfg, self.model, self.optimizer, cfg.epochs)
        self.augment = build("augment", SWITCHES["augment"].key(cfg.augment), cfg, self.data.shape[-1], self.hflip)
        robust = build("robust_eval", _on_off(cfg.eval_eps), cfg, cfg.eval_batch_size, cfg.seed)
        xdomain = build("xdomain_eval", _on_off(cfg.eval_datasets), cfg, DataSpec.of(cfg), self.data.shape,
                        self.device, cfg.eval_batch_size)
        landscape = build("landscape", _on_off(cfg.landscape_probe), cfg)
        self.evaluators: list[Evaluator] = [e for e in (robust, xdomain, landscape) if e] + self.extra_evaluators
        self.finalizers: list[Finalizer] = ([finalize_swa] if self.swa else []) + self.extra_finalizers

    def new_phase(self, config: TrainConfig | None = None, **overrides) -> None:
        """Start another phase on the same model: ``config`` (default: this phase's) with ``overrides``
        (validated), fresh optimizer, scheduler and SWA over the (possibly changed) trainable parameters;
        ``step`` keeps counting."""
        self.epoch = 0
        self.phase += 1
        cfg = config or self.cfg
        self._build(cfg.with_overrides(**overrides) if overrides else cfg)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.trainable(self.model))

    # ------------------------------------------------------------ random state
    def _devices(self) -> list:
        return [self.device] if self.device.type == "cuda" else []

    @contextlib.contextmanager
    def _fresh_rng(self, seed: int):
        with torch.random.fork_rng(devices=self._devices()):
            torch.manual_seed(seed)
            yield

    def _rng_state(self) -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    @contextlib.contextmanager
    def own_rng(self):
        """Run with the trainer's RNG state as the global one; the caller's global RNG is left as it was."""
        with torch.random.fork_rng(devices=self._devices()):
            torch.set_rng_state(self.rng["torch"])
            if "cuda" in self.rng:
                torch.cuda.set_rng_state(self.rng["cuda"], self.device)
            yield
            self.rng = self._rng_state()

    # ------------------------------------------------------------ one epoch
    def autocast(self):
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _batches(self):
        train, bs = self.data.train, self.cfg.batch_size
        perm = torch.randperm(len(train), generator=self.generator).to(self.device)
        for i in range(0, len(perm), bs):
            idx = perm[i : i + bs]
            if len(idx) < 2:  # BatchNorm cannot train on a single sample
                continue
            x = train.x[idx]
            if self.augment is not None:
                x = self.augment(x, self.generator)
            if self.channels_last:  # not x.contiguous(...): with one channel that keeps NCHW strides
                x = torch.empty_like(x, memory_format=torch.channels_last).copy_(x)
            yield x, train.y[idx]

    def train_epoch(self) -> tuple[float, float, int, dict[str, float]]:
        """One pass over the training set: (mean total loss, accuracy, samples seen, {term name: mean value}).

        Per batch, the metrics cost one extra op (the argmax): losses and predictions are kept on
        the device and reduced once at the end, so there is no per-batch sync or bookkeeping kernel.
        """
        with self.own_rng():
            self.train_mode(self.model)
            params = self.optimizer.param_groups
            losses, preds, labels, terms = [], [], [], [[] for _ in self.terms]
            for x, y in self._batches():
                with self.autocast():
                    loss, out = self.batch_loss(x, y, self.epoch)
                    for t, values in zip(self.terms, terms):
                        value = t.fn(out, y, self.model)
                        values.append(value.detach())
                        loss = loss + t.weight * value
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.cfg.grad_clip:
                    nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], self.cfg.grad_clip)
                self.optimizer.step()
                if self.per_batch and not self.swa_active():  # SWALR owns the lr once averaging starts
                    self.scheduler.step()
                losses.append(loss.detach())
                preds.append(out.scores.detach().argmax(1))
                labels.append(y)
        if not labels:
            return 0.0, 0.0, 0, {t.name: 0.0 for t in self.terms}
        sizes = torch.tensor([len(y) for y in labels], dtype=torch.float32, device=self.device)
        seen = int(sizes.sum().item())
        loss_sum = torch.stack(losses).float() @ sizes
        term_means = {t.name: (torch.stack(v).float() @ sizes).item() / seen for t, v in zip(self.terms, terms)}
        correct = (torch.cat(preds) == torch.cat(labels)).sum()
        return loss_sum.item() / seen, correct.item() / seen, seen, term_means

    def swa_active(self) -> bool:
        return self.swa is not None and self.epoch >= self.swa.start

    def _end_of_epoch_schedule(self, val_loss: float):
        if self.swa_active():
            self.swa.model.update_parameters(self.model)
            self.swa.scheduler.step()
        elif self.scheduler is not None and not self.per_batch:
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(val_loss)
            else:
                self.scheduler.step()

    def eval_model(self) -> nn.Module:
        """The model to evaluate: the SWA average once completed at the last epoch, else the live model.

        (Mid-run the average's BatchNorm statistics are those of the initial model; ``finalize_swa``
        recomputes them at the end.)
        """
        if self.swa is not None and swa_final(self.cfg, self.epoch):
            return self.swa.model.module
        return self.model

    def _evaluate(self, split: Split) -> dict[str, float]:
        return evaluate_split(self.eval_model(), split, self.cfg.eval_batch_size, self.loss_fn, self.autocast())

    # ------------------------------------------------------------ the run
    def fit(self, on_epoch: EpochCallback | None = None) -> TrainResult:
        """Train the remaining epochs of this phase; every epoch's metrics go to ``on_epoch`` (True stops).

        Metrics: epoch (global ``step``), train_loss (the total objective), train_acc, train_<term>, lr,
        val_loss (criterion), val_acc, val_nll, the evaluators' metrics, test_* at the last epoch,
        epoch_time, samples_per_s. A non-finite training loss ends the run: that epoch reports
        ``diverged: 1.0`` with NaN val_*, and the result's status is ``diverged``.
        """
        cfg = self.cfg
        while self.epoch < cfg.epochs:
            lr = self.optimizer.param_groups[0]["lr"]
            t0 = time.perf_counter()
            train_loss, train_acc, seen, term_means = self.train_epoch()
            train_time = time.perf_counter() - t0
            self.epoch += 1
            self.step += 1
            metrics = {"epoch": self.step, TRAIN_LOSS: train_loss, TRAIN_ACC: train_acc,
                       **{term_metric(k): v for k, v in term_means.items()}, LR: lr}
            if not math.isfinite(train_loss):
                self.status, self.reason = "diverged", f"non-finite training loss at epoch {self.step}"
                metrics.update({DIVERGED: 1.0, VAL_LOSS: math.nan, VAL_ACC: math.nan, VAL_NLL: math.nan,
                                EPOCH_TIME: time.perf_counter() - t0, SAMPLES_PER_S: seen / max(train_time, 1e-9)})
                self.history.append(metrics)
                if on_epoch is not None:
                    on_epoch(metrics, self)
                break
            val = evaluate_split(self.model, self.data.val, cfg.eval_batch_size, self.loss_fn, self.autocast())
            self._end_of_epoch_schedule(val["loss"])
            last = self.epoch == cfg.epochs
            if last:
                for finalize in self.finalizers:
                    finalize(self)
                if self.eval_model() is not self.model:
                    val = self._evaluate(self.data.val)
            metrics.update({VAL_LOSS: val["loss"], VAL_ACC: val["acc"], VAL_NLL: val["nll"]})
            for evaluator in self.evaluators:
                metrics.update(evaluator(self))
            if last:
                test = self._evaluate(self.data.test)
                metrics.update(zip(TEST_METRICS, (test["loss"], test["acc"], test["nll"])))
            metrics.update({EPOCH_TIME: time.perf_counter() - t0, SAMPLES_PER_S: seen / max(train_time, 1e-9)})
            self.history.append(metrics)
            if on_epoch is not None and on_epoch(metrics, self) is True:
                if self.epoch < cfg.epochs:
                    self.status, self.reason = "stopped", f"stopped by the caller after epoch {self.step}"
                break
        final = dict(self.history[-1]) if self.history else {}
        model = self.eval_model().eval()  # callers predict with it: running BN statistics, no dropout
        return TrainResult(self.cfg, model, self.history, final, self.data.source, self.status, self.reason)

# ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        state = {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "phase": self.phase,
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {"generator": self.generator.get_state(), **self.rng},
        }
        if self.swa is not None:
            state["swa_model"] = self.swa.model.state_dict()
            state["swa_scheduler"] = self.swa.scheduler.state_dict()
        return state

    def save_checkpoint(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        state = read_checkpoint(path, self.device, needs=("model", "optimizer", "rng", "epoch", "history"))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.swa is not None and "swa_model" in state:
            self.swa.model.load_state_dict(state["swa_model"])
            self.swa.scheduler.load_state_dict(state["swa_scheduler"])
        self.generator.set_state(state["rng"]["generator"])
        self.rng = {"torch": state["rng"]["torch"].cpu()}
        if "cuda" in state["rng"] and self.device.type == "cuda":
            self.rng["cuda"] = state["rng"]["cuda"].cpu()
        self.epoch = state["epoch"]
        self.step = state.get("step", self.epoch)
        self.phase = state.get("phase", 0)
        self.history = list(state["history"])


def uses_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """The run's memory layout: ``channels_last`` if set, else on for CUDA and CPU (faster on both)."""
    return cfg.channels_last if cfg.channels_last is not None else device.type in ("cuda", "cpu")


def load_model(path: str | Path, device: str = "cpu") -> tuple[Network, TrainConfig]:
    """Rebuild a trained model from a checkpoint (weights only; no pickled code is executed).

    The model is the one the run reported: the SWA average for a completed SWA run, else the
    trained weights, in the run's memory layout. Needs no dataset files and leaves the global random state untouched.
    """
    state = read_checkpoint(path, device, needs=("model", "config", "epoch"))
    cfg = TrainConfig.from_dict(state["config"], strict=False)  # a record of what ran, older ones included
    info = subset_info(dataset_info(cfg.dataset), cfg.classes, cfg.class_groups)
    with torch.random.fork_rng(devices=[]):  # weight initialization would consume the caller's RNG
        model = network_for(cfg, info, cfg.channels or info.channels, cfg.image_size or info.size)
    weights = state["model"]
    if state.get("swa_model") is not None and swa_final(cfg, state["epoch"]):
        weights = {k.removeprefix("module."): v for k, v in state["swa_model"].items() if k.startswith("module.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:  # weights of another architecture than its config describes
        raise CheckpointError(f"checkpoint {path}: its weights do not fit the model its config describes: "
                              f"{str(e).splitlines()[0]}") from None
    model = model.to(device)
    if uses_channels_last(cfg, torch.device(device)):  # the run's layout: the same numbers, bit for bit
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), cfg


def finalize_swa(trainer: Trainer) -> None:
    """The SWA finalizer: recompute the average's BatchNorm statistics on the training images."""
    if trainer.swa is not None and trainer.epoch > trainer.swa.start:
        bs = trainer.cfg.eval_batch_size
        x = trainer.data.train.x
        update_bn((x[i : i + bs] for i in range(0, len(x), bs)), trainer.swa.model)
