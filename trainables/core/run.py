"""One call to train a model: ``train(config)``, and the trainer a config needs.

Above both trainers (``train.Trainer`` and ``finetune.TransferTrainer``), so neither imports the other's
module to pick between them.
"""

from __future__ import annotations

from pathlib import Path

from .config import TrainConfig
from .data import DataBundle
from .finetune import TransferTrainer
from .trainer import EpochCallback, Trainer, TrainResult


def make_trainer(config: TrainConfig | dict, data: DataBundle | None = None, **hooks) -> Trainer:
    """The trainer a config needs: a ``TransferTrainer`` with ``init_from`` or ``finetune_dataset``."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    if cfg.init_from or cfg.finetune_dataset:
        return TransferTrainer(cfg, data, **hooks)
    return Trainer(cfg, data, **hooks)


def train(config: TrainConfig | dict | None = None, *, on_epoch: EpochCallback | None = None,
          resume_from: str | Path | None = None, data: DataBundle | None = None, **overrides) -> TrainResult:
    """Train one model. ``config`` is a ``TrainConfig`` or a dict; keyword overrides are merged in.

    ``on_epoch(metrics, trainer)`` is called after every epoch (return True to stop);
    ``resume_from`` continues a run from a checkpoint written by ``Trainer.save_checkpoint``.
    Overrides are validated like the config (a field with no effect is a ``ConfigError``).
    """
    if isinstance(config, TrainConfig):
        cfg = config.with_overrides(**overrides) if overrides else config
    else:
        cfg = TrainConfig.from_dict(config, **overrides)
    trainer = make_trainer(cfg, data=data)
    if resume_from is not None:
        trainer.load_checkpoint(resume_from)
    return trainer.fit(on_epoch)


__all__ = ["make_trainer", "train"]
