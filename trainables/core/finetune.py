"""Pretrain, then fine-tune on k labelled target samples per class: one run, one monotonic step count.

``epochs`` counts every epoch of the run (what a search's budget and ASHA see); with
``finetune_dataset`` set, the last ``finetune_epochs`` of them fine-tune:

1. pretraining: ``epochs - finetune_epochs`` epochs on ``dataset`` (none when that is 0, which
   needs ``init_from``), from ``init_from``'s weights when given;
2. fine-tuning: ``freeze`` applied (frozen parts keep requires_grad off, and the base trainer's
   ``frozen_parts_eval`` keeps them in eval mode, so their BatchNorm statistics cannot move), a
   fresh optimizer of the same kind over the trainable parameters at ``finetune_lr`` with the
   same scheduler over the phase (no SWA or warm-up; the base ``Trainer.new_phase``), on
   ``finetune_per_class`` samples of each class of the target's training split
   (drawn by ``seed``). Validation and test stay the source's (forgetting shows in ``val_acc``).

Every epoch reports the accuracy on the target's test split: as ``finetune_acc_before`` while
pretraining (the value at the last pretraining epoch is the "before", which fine-tuning epochs
repeat), as ``finetune_acc`` while fine-tuning. ``finetune_acc`` is NaN on pretraining epochs, so a
study whose objective is ``finetune_acc`` ranks trials on fine-tuned accuracy only: a pretrained
model that happens to score higher on the target before fine-tuning is not its best epoch (NaN is
never a best value, never stops a trial under ASHA and ranks below every checkpoint in Ray).
``epoch`` (the trainer's ``step``) keeps counting across the phases.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from .checkpoint import read_checkpoint
from .config import TrainConfig
from .crossdomain import accuracy, target_test
from .data import DataSpec, load
from .metric_names import FINETUNE_ACC, FINETUNE_ACC_BEFORE
from .registry import build
from .trainer import Trainer
from .transfer import FinetunePlan, apply_freeze, load_weights, per_class_subset

TRANSFER_FIELDS = ("finetune_dataset", "finetune_per_class", "finetune_epochs", "finetune_lr", "freeze")
NOT_IN_FINETUNING = ("swa", "swa_start", "swa_lr", "warmup_epochs", "init_from", "pretrained")


def phase_configs(cfg: TrainConfig) -> tuple[TrainConfig | None, TrainConfig | None, FinetunePlan | None]:
    """(pretraining config or None, fine-tuning config or None, the fine-tuning plan) of a run's config."""
    plan = build("finetune", "on" if cfg.finetune_dataset else "off", cfg, cfg.finetune_dataset)
    if plan is None:
        return cfg, None, None
    explicit = {k: v for k, v in cfg.explicit().items() if k not in TRANSFER_FIELDS}
    pre_epochs = cfg.epochs - plan.epochs
    pre = TrainConfig.from_dict({**explicit, "epochs": pre_epochs}) if pre_epochs > 0 else None
    fine = {k: v for k, v in explicit.items() if k not in NOT_IN_FINETUNING}
    return pre, TrainConfig.from_dict({**fine, "epochs": plan.epochs, "lr": plan.lr}), plan


class TransferTrainer(Trainer):
    """A ``Trainer`` that starts from ``init_from`` and runs the fine-tuning phase after pretraining."""

    def __init__(self, config: TrainConfig | dict, data=None, **hooks):
        plan = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        pre, self.fine_cfg, self.ft = phase_configs(plan)
        self.plan, self.before = plan, float("nan")
        if self.fine_cfg is not None:
            hooks["evaluators"] = [*hooks.get("evaluators", ()), self._target_accuracy]
        super().__init__(pre or self.fine_cfg, data, **hooks)
        self.total_epochs = plan.epochs
        if plan.init_from:
            load_weights(self.model, plan.init_from)
        if pre is None:
            self.enter_finetune()

    # ------------------------------------------------------------ the target
    def _target_spec(self) -> DataSpec:
        """The fine-tuning dataset, loaded like the run's (split seed, class subset) at the model's input shape."""
        c, s, _ = self.data.shape
        return DataSpec.of(self.plan).target(self.ft.dataset, c, s)

    def _target_split(self):
        return target_test(self._target_spec(), str(self.device))

    def _target_accuracy(self, trainer) -> dict[str, float]:
        acc = accuracy(self.eval_model(), self._target_split(), self.cfg.eval_batch_size, self.autocast())
        if self.phase == 1:
            return {FINETUNE_ACC: acc, FINETUNE_ACC_BEFORE: self.before}
        return {FINETUNE_ACC: math.nan, FINETUNE_ACC_BEFORE: acc}

    def enter_finetune(self) -> None:
        """Freeze, swap the training set for the k-shot target subset, and start the fine-tuning phase."""
        self.before = accuracy(self.model, self._target_split(), self.cfg.eval_batch_size)
        target = load(self._target_spec(), self.device)
        self.data = replace(self.data, train=per_class_subset(target.train, self.ft.per_class, seed=self.plan.seed))
        apply_freeze(self.model, self.ft.freeze)
        self.new_phase(self.fine_cfg)

    # ------------------------------------------------------------ the run and its checkpoints
    def fit(self, on_epoch=None):
        if self.phase == 0:
            result = super().fit(on_epoch)
            if self.fine_cfg is None or result.status != "completed":
                return result
            self.enter_finetune()
        return super().fit(on_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "finetune_before": self.before}

    def load_checkpoint(self, path: str | Path) -> None:
        state = read_checkpoint(path)
        if state.get("phase", 0) == 1 and self.phase == 0:
            self.enter_finetune()  # the optimizer state to load is the fine-tuning phase's
        super().load_checkpoint(path)
        self.before = float(state.get("finetune_before", self.before))


__all__ = ["TransferTrainer", "phase_configs"]
