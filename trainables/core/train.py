"""One training run, in plain PyTorch: ``train(config)``.

Data lives on the device as tensors, batches are index slices, augmentation is batched,
evaluation runs under ``torch.inference_mode()``. On CUDA, bfloat16 autocast and
channels_last are on by default. Checkpoints hold everything needed to continue a run at
the next epoch with the same results as an uninterrupted one (model, optimizer, scheduler,
SWA state, history, random-number generators) and load with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from .adversarial import make_batch_loss, robust_metrics
from .config import TrainConfig
from .data import DATASETS, DataBundle, DatasetInfo, Split, augment, load_data, norm_stats
from .losses import build_loss
from .models import Network, build_model
from .optim import build_optimizer, build_scheduler

EpochCallback = Callable[[dict[str, float], "Trainer"], Any]


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_data(cfg: TrainConfig, device: torch.device) -> DataBundle:
    return load_data(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, val_fraction=cfg.val_fraction,
                     split_seed=cfg.split_seed, channels=cfg.channels, size=cfg.image_size,
                     max_train_samples=cfg.max_train_samples, device=device)


def build_network(cfg: TrainConfig, data: DataBundle) -> Network:
    c, h, _ = data.shape
    return network_for(cfg, data.info, c, h)


def network_for(cfg: TrainConfig, info: DatasetInfo, channels: int, size: int) -> Network:
    """The configured model for ``channels`` x ``size`` x ``size`` images of dataset ``info`` (no data needed)."""
    mean, std = norm_stats(info, channels)
    return build_model(cfg.model, in_channels=channels, num_classes=info.num_classes, image_size=size, mean=mean,
                       std=std, filters=cfg.filters, activation_name=cfg.activation, slope=cfg.leaky_slope,
                       batchnorm=cfg.batchnorm, dropout=cfg.dropout, width=cfg.width)


def swa_start_epoch(cfg: TrainConfig) -> int:
    """The epoch after which SWA averages weights (``swa_start``, or the last 25 % of the run)."""
    return cfg.swa_start if cfg.swa_start is not None else int(0.75 * cfg.epochs)


def swa_final(cfg: TrainConfig, epoch: int) -> bool:
    """Whether the SWA average is the run's model after ``epoch`` epochs: only once it has been completed
    (BatchNorm statistics recomputed) at the last epoch. Before that its BatchNorm buffers are stale."""
    return cfg.swa and epoch == cfg.epochs and epoch > swa_start_epoch(cfg)


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1024, loss_fn=None, autocast=None) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on a split."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    for i in range(0, len(split), batch_size):
        x, y = split.x[i : i + batch_size], split.y[i : i + batch_size]
        with autocast or contextlib.nullcontext():
            logits = model(x)
        if loss_fn is not None:
            loss_sum += loss_fn(logits.float(), y).sum()
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = max(1, len(split))
    return loss_sum.item() / n, correct.item() / n


@dataclass
class TrainResult:
    config: TrainConfig
    model: Network
    history: list[dict[str, float]]
    final: dict[str, float] = field(default_factory=dict)
    data_source: str = ""

    def best(self, metric: str = "val_acc", mode: str = "max") -> dict[str, float]:
        pick = max if mode == "max" else min
        return pick(self.history, key=lambda m: m[metric])


class Trainer:
    """Holds one run's state; ``fit`` runs the remaining epochs."""

    def __init__(self, config: TrainConfig | dict, data: DataBundle | None = None):
        self.cfg = cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        self.device = pick_device(cfg.device)
        cuda = self.device.type == "cuda"
        self.amp = cfg.amp if cfg.amp is not None else cuda
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else cuda
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.data = data if data is not None else build_data(cfg, self.device)
        self.model = build_network(cfg, self.data).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(cfg.loss, smoothing=cfg.label_smoothing, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
        self.optimizer = build_optimizer(cfg.optimizer, self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        n = len(self.data.train)
        self.steps_per_epoch = n // cfg.batch_size + (1 if n % cfg.batch_size > 1 else 0)
        self.scheduler, self.per_batch = build_scheduler(
            cfg.scheduler, self.optimizer, epochs=cfg.epochs, steps_per_epoch=self.steps_per_epoch, lr=cfg.lr,
            step_size=cfg.step_size, gamma=cfg.gamma, plateau_factor=cfg.plateau_factor,
            plateau_patience=cfg.plateau_patience, warmup_epochs=cfg.warmup_epochs)
        self.swa_start = swa_start_epoch(cfg) if cfg.swa else None
        self.swa_model = AveragedModel(self.model) if cfg.swa else None
        self.swa_scheduler = SWALR(self.optimizer, swa_lr=cfg.swa_lr or cfg.lr * 0.05) if cfg.swa else None
        self.l1_params = [p for p in self.model.parameters() if p.dim() > 1] if cfg.l1 else []
        self.batch_loss = make_batch_loss(cfg, self.model, self.loss_fn)
        size = self.data.shape[-1]
        self.crop_padding = cfg.crop_padding if cfg.crop_padding is not None else (4 if size >= 32 else 2 if size >= 16 else 0)
        self.hflip = self.data.info.hflip
        self.epoch = 0  # epochs completed
        self.history: list[dict[str, float]] = []

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
            if self.cfg.augment and (self.crop_padding or self.hflip):
                x = augment(x, crop_padding=self.crop_padding, hflip=self.hflip, generator=self.generator)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, train.y[idx]

    def train_epoch(self) -> tuple[float, float, int]:
        """One pass over the training set: (mean loss, accuracy, samples seen).

        Per batch, the metrics cost one extra op (the argmax): losses and predictions are kept on
        the device and reduced once at the end, so there is no per-batch sync or bookkeeping kernel.
        """
        self.model.train()
        losses, preds, labels = [], [], []
        for x, y in self._batches():
            with self.autocast():
                loss, logits = self.batch_loss(x, y, self.epoch)
            if self.l1_params:
                loss = loss + self.cfg.l1 * sum(p.abs().sum() for p in self.l1_params)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            if self.per_batch and not self.swa_active():  # SWALR owns the lr once averaging starts
                self.scheduler.step()
            losses.append(loss.detach())
            preds.append(logits.detach().argmax(1))
            labels.append(y)
        if not labels:
            return 0.0, 0.0, 0
        sizes = [len(y) for y in labels]
        seen = sum(sizes)
        loss_sum = torch.stack(losses).float() @ torch.tensor(sizes, dtype=torch.float32, device=self.device)
        correct = (torch.cat(preds) == torch.cat(labels)).sum()
        return loss_sum.item() / seen, correct.item() / seen, seen

    def swa_active(self) -> bool:
        return self.swa_model is not None and self.epoch >= self.swa_start

    def _end_of_epoch_schedule(self, val_loss: float):
        if self.swa_active():
            self.swa_model.update_parameters(self.model)
            self.swa_scheduler.step()
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
        if self.swa_model is not None and swa_final(self.cfg, self.epoch):
            return self.swa_model.module
        return self.model

    def finalize_swa(self):
        if self.swa_model is not None and self.epoch > self.swa_start:
            bs = self.cfg.eval_batch_size
            update_bn((self.data.train.x[i : i + bs] for i in range(0, len(self.data.train), bs)), self.swa_model)

    # ------------------------------------------------------------ the run
    def fit(self, on_epoch: EpochCallback | None = None) -> TrainResult:
        cfg = self.cfg
        while self.epoch < cfg.epochs:
            lr = self.optimizer.param_groups[0]["lr"]
            t0 = time.perf_counter()
            train_loss, train_acc, seen = self.train_epoch()
            train_time = time.perf_counter() - t0
            val_loss, val_acc = evaluate(self.model, self.data.val, cfg.eval_batch_size, self.loss_fn, self.autocast())
            self.epoch += 1
            self._end_of_epoch_schedule(val_loss)
            last = self.epoch == cfg.epochs
            metrics = {"epoch": self.epoch, "train_loss": train_loss, "train_acc": train_acc, "lr": lr}
            if last and self.swa_model is not None and self.epoch > self.swa_start:
                self.finalize_swa()
                val_loss, val_acc = evaluate(self.eval_model(), self.data.val, cfg.eval_batch_size, self.loss_fn,
                                             self.autocast())
            metrics.update(val_loss=val_loss, val_acc=val_acc)
            if cfg.eval_eps:
                metrics.update(robust_metrics(self.eval_model(), self.data.val, cfg))
            if last:
                test_loss, test_acc = evaluate(self.eval_model(), self.data.test, cfg.eval_batch_size, self.loss_fn,
                                               self.autocast())
                metrics.update(test_loss=test_loss, test_acc=test_acc)
            metrics.update(epoch_time=time.perf_counter() - t0, samples_per_s=seen / max(train_time, 1e-9))
            self.history.append(metrics)
            if on_epoch is not None and on_epoch(metrics, self) is True:
                break
        final = dict(self.history[-1]) if self.history else {}
        model = self.eval_model().eval()  # callers predict with it: running BN statistics, no dropout
        return TrainResult(cfg, model, self.history, final, self.data.source)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        state = {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state()},
        }
        if self.swa_model is not None:
            state["swa_model"] = self.swa_model.state_dict()
            state["swa_scheduler"] = self.swa_scheduler.state_dict()
        if torch.cuda.is_available() and self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_checkpoint(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.swa_model is not None and "swa_model" in state:
            self.swa_model.load_state_dict(state["swa_model"])
            self.swa_scheduler.load_state_dict(state["swa_scheduler"])
        self.generator.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.epoch = state["epoch"]
        self.history = list(state["history"])


def train(config: TrainConfig | dict | None = None, *, on_epoch: EpochCallback | None = None,
          resume_from: str | Path | None = None, data: DataBundle | None = None, **overrides) -> TrainResult:
    """Train one model. ``config`` is a ``TrainConfig`` or a dict; keyword overrides are merged in.

    ``on_epoch(metrics, trainer)`` is called after every epoch (return True to stop);
    ``resume_from`` continues a run from a checkpoint written by ``Trainer.save_checkpoint``.
    """
    if isinstance(config, TrainConfig):
        cfg = config.model_copy(update=overrides) if overrides else config
    else:
        cfg = TrainConfig.from_dict(config, **overrides)
    trainer = Trainer(cfg, data=data)
    if resume_from is not None:
        trainer.load_checkpoint(resume_from)
    return trainer.fit(on_epoch)


def load_model(path: str | Path, device: str = "cpu") -> tuple[Network, TrainConfig]:
    """Rebuild a trained model from a checkpoint (weights only; no pickled code is executed).

    The model is the one the run reported: the SWA average for a completed SWA run, else the
    trained weights. Needs no dataset files and leaves the global random state untouched.
    """
    state = torch.load(path, map_location=device, weights_only=True)
    cfg = TrainConfig.from_dict(state["config"])
    info = DATASETS[cfg.dataset]
    with torch.random.fork_rng(devices=[]):  # weight initialization would consume the caller's RNG
        model = network_for(cfg, info, cfg.channels or info.channels, cfg.image_size or info.size)
    weights = state["model"]
    if state.get("swa_model") is not None and swa_final(cfg, state["epoch"]):
        weights = {k.removeprefix("module."): v for k, v in state["swa_model"].items() if k.startswith("module.")}
    model.load_state_dict(weights)
    return model.to(device).eval(), cfg
