"""Transfer settings at their boundaries: a class with exactly k samples, a backbone whose last child is a
Sequential (Shake-Shake), the "before" accuracy across a resume, cross-domain metrics of the SWA model."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY

from trainables.core.crossdomain import accuracy
from trainables.core.data import Split, load_data
from trainables.core.run import make_trainer
from trainables.core.shakeshake import ShakeBlock, shakeshake26_2x96d
from trainables.core.transfer import freeze_all_but_last_block, last_block, per_class_subset

FINETUNE = {**TINY, "epochs": 3, "finetune_dataset": "digits:rotate@4", "finetune_per_class": 5,
            "finetune_epochs": 2, "finetune_lr": 0.05}


def test_a_class_with_exactly_k_samples_gives_all_of_them():
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    split = Split(torch.arange(len(y), dtype=torch.float32)[:, None, None, None], y)
    sub = per_class_subset(split, 3, seed=0)
    assert torch.bincount(sub.y).tolist() == [3, 3, 3]
    assert sorted(sub.x[sub.y == 0].flatten().long().tolist()) == [0, 1, 2]  # the whole class
    with pytest.raises(ValueError, match="class 0 has 3 samples, fewer than finetune_per_class = 4"):
        per_class_subset(split, 4)


class _Net(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone, self.head = backbone, torch.nn.Linear(backbone.out_features, 10)


def test_the_last_block_of_shake_shake_is_its_last_residual_block():
    backbone = shakeshake26_2x96d(1, width=4)  # its only child is one Sequential holding every layer
    block = last_block(backbone)
    assert isinstance(block, ShakeBlock) and block is [m for m in backbone.body if isinstance(m, ShakeBlock)][-1]
    frozen = freeze_all_but_last_block(_Net(backbone))
    assert backbone.body[0] in frozen  # the stem is frozen
    kept = {id(m) for m in block.modules()}
    trainable = [m for m in backbone.modules() if not list(m.children()) and m not in frozen and _params(m)]
    assert trainable and all(id(m) in kept for m in trainable)


def _params(m):
    return any(True for _ in m.parameters())


def test_resume_inside_fine_tuning_restores_the_before_accuracy(tmp_path):
    first = make_trainer(FINETUNE)
    saved = {}

    def stop_in_finetuning(metrics, trainer):
        if trainer.phase == 1:
            trainer.before = 0.123456  # a value no model here scores: the resumed one must come from the checkpoint
            saved["path"] = trainer.save_checkpoint(tmp_path / "mid.pt")
            return True

    first.fit(stop_in_finetuning)
    again = make_trainer(FINETUNE)
    again.load_checkpoint(saved["path"])
    assert again.phase == 1 and again.before == 0.123456
    result = again.fit()
    assert result.history[-1]["finetune_acc_before"] == 0.123456


def test_cross_domain_metrics_at_the_end_are_those_of_the_swa_model():
    target = "digits:invert"
    trainer = make_trainer({**TINY, "epochs": 4, "swa": True, "swa_start": 1, "swa_lr": 0.05, "lr": 0.05,
                            "eval_datasets": [target], "max_train_samples": 400})
    result = trainer.fit()
    test = load_data(target).test
    swa, live = accuracy(trainer.eval_model(), test), accuracy(trainer.model, test)
    assert trainer.eval_model() is not trainer.model and swa != live  # else this test could not tell them apart
    assert result.history[-1]["xdomain_acc_digits_invert"] == pytest.approx(swa)


def test_the_run_seed_draws_the_k_shot_subset():
    def subset(seed):
        trainer = make_trainer({**FINETUNE, "seed": seed})
        trainer.enter_finetune()
        return trainer.data.train

    a, again, other = subset(3), subset(3), subset(0)
    assert torch.equal(a.x, again.x) and torch.equal(a.y, again.y)
    assert torch.bincount(a.y).tolist() == torch.bincount(other.y).tolist() == [5] * 10
    assert not torch.equal(a.x, other.x)


def test_swa_and_warm_up_act_in_pretraining_only():
    trainer = make_trainer({**FINETUNE, "epochs": 4, "swa": True, "warmup_epochs": 1, "lr": 0.1})
    assert trainer.swa is not None and trainer.cfg.warmup_epochs == 1
    trainer.enter_finetune()
    assert trainer.swa is None and not trainer.cfg.swa and trainer.cfg.warmup_epochs == 0
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(FINETUNE["finetune_lr"])  # no warm-up ramp
