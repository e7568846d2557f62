"""The regnet family wired into the core: config fields, terms, class subsets, plain FGSM accuracy, schedules."""

from __future__ import annotations

import pytest
import torch

from trainables.core import ConfigError, TrainConfig, Trainer, load_model
from trainables.core.attacks import fgsm
from trainables.core.gaussian_head import GaussianHead, gaussianity_evaluator
from trainables.core.metric_names import GAUSSIANITY_METRICS
from trainables.core.robustness import RobustEval
from trainables.families import FAMILIES, trial_config

REGNET = {"head": "gaussian", "loss": "none", "mu_t": 10.0, "optimizer": "adam", "lr": 0.003, "weight_decay": 0.0}


def test_gaussian_fields_act_only_with_the_gaussian_head(tiny):
    with pytest.raises(ConfigError, match="mu_t"):
        TrainConfig.from_dict({**tiny, "mu_t": 10.0})  # head linear: mu_t would do nothing
    with pytest.raises(ConfigError, match="kurtosis_penalty"):
        TrainConfig.from_dict({**tiny, **REGNET, "kurtosis_penalty": "cubic"})
    with pytest.raises(ConfigError, match="regnet_loss"):
        TrainConfig.from_dict({**tiny, **REGNET, "regnet_loss": "kl"})
    cfg = TrainConfig.from_dict({**tiny, **REGNET, "regnet_loss": "simplified", "kurtosis_penalty": "square"})
    assert {"mu_t", "sigma_t", "regnet_loss", "kurtosis_factor", "kurtosis_penalty"} <= set(cfg.to_dict())


def test_regnet_run_logs_terms_and_gaussianity_on_a_class_subset(tiny):
    cfg = {**tiny, **REGNET, "classes": [7, 1, 4], "epochs": 3, "eval_eps": [0.1], "eval_samples": 100}
    trainer = Trainer(cfg, evaluators=[gaussianity_evaluator])
    for split in (trainer.data.train, trainer.data.val, trainer.data.test):
        assert sorted(split.y.unique().tolist()) == [0, 1, 2]
    assert isinstance(trainer.model.head, GaussianHead) and trainer.model.head.d == 3
    result = trainer.fit()
    first, last = result.history[0], result.history[-1]
    for key in ("train_regnet", "train_kurtosis", "fgsm_plain_acc_eps0.1", *GAUSSIANITY_METRICS):
        assert key in last, key
    assert last["train_regnet"] < first["train_regnet"]
    assert last["train_loss"] == pytest.approx(last["train_regnet"] + 0.2 * last["train_kurtosis"], rel=1e-4)
    assert last["test_acc"] > 0.8  # three digit classes are easy
    assert last["fgsm_plain_acc_eps0.1"] >= last["fgsm_acc_eps0.1"]


def test_kurtosis_term_off_at_zero_factor(tiny):
    trainer = Trainer({**tiny, **REGNET, "kurtosis_factor": 0.0, "epochs": 1})
    assert [t.name for t in trainer.terms] == ["regnet"]
    assert [t.name for t in Trainer({**tiny, **REGNET, "epochs": 1}).terms] == ["regnet", "kurtosis"]
    assert Trainer({**tiny, "epochs": 1}).terms == []


def test_class_groups_and_checkpoint_round_trip(tiny, tmp_path):
    cfg = {**tiny, **REGNET, "class_groups": [[0, 1, 2], [3, 4, 5], [6, 7, 8]], "epochs": 1}
    trainer = Trainer(cfg)
    full = Trainer({**tiny, "epochs": 1}).data.test
    kept = full.y < 9
    assert len(trainer.data.test) == int(kept.sum())
    assert torch.equal(trainer.data.test.y, full.y[kept] // 3)
    trainer.fit()
    path = trainer.save_checkpoint(tmp_path / "ckpt.pt")
    model, loaded = load_model(path)
    assert loaded.class_groups == ((0, 1, 2), (3, 4, 5), (6, 7, 8))
    x = trainer.data.test.x[:20]
    assert torch.equal(model(x), trainer.eval_model().eval()(x))
    with pytest.raises(ConfigError, match="either"):
        TrainConfig.from_dict({**tiny, "classes": [0], "class_groups": [[1]]})
    with pytest.raises(ConfigError, match="out of range"):
        TrainConfig.from_dict({**tiny, "classes": [0, 10]})


def test_plain_fgsm_accuracy_counts_every_sample(tiny):
    trainer = Trainer({**tiny, "epochs": 1})
    trainer.fit()
    model, val = trainer.eval_model(), trainer.data.val
    out = RobustEval((0.0, 0.3), 5, 200, 256, 0).measure(model, val)
    x, y = val.x[:200], val.y[:200]
    adv = fgsm(model, x, y, eps=0.3)
    with torch.no_grad():
        plain = (model(adv).argmax(1) == y).float().mean().item()
    assert out["fgsm_plain_acc_eps0.3"] == pytest.approx(plain)
    assert out["fgsm_plain_acc_eps0"] == out["clean_acc"]


def test_multistep_milestones_count_iterations(tiny):
    trainer = Trainer({**tiny, "scheduler": "multistep", "milestones": [3, 5], "lr": 0.1, "gamma": 0.1,
                       "epochs": 1})
    assert trainer.steps_per_epoch > 5
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="milestones"):
        TrainConfig.from_dict({**tiny, "scheduler": "multistep", "milestones": [5, 3]})


def test_regnet_family_schema_and_metrics():
    family = FAMILIES["regnet"]
    assert family.schema_problems({"head": "gaussian"}) == []
    assert [loc for loc, _ in family.schema_problems({"loss": "cross_entropy"})] == [("loss",)]
    assert family.schema_problems({"adv_mode": "pgd"})
    gaussian = family.metrics({"head": "gaussian", "eval_eps": [0.1]})
    assert {"train_regnet", "train_kurtosis", "fgsm_plain_acc_eps0.1", *GAUSSIANITY_METRICS} <= set(gaussian)
    linear = family.metrics({"head": "linear"})
    assert "train_regnet" not in linear and "val_hist_rmse" not in linear
    assert trial_config({"head": "gaussian"})["loss"] == "none"
    assert trial_config({})["loss"] == "cross_entropy"


def test_shakeshake_is_a_registered_backbone():
    from trainables.core.registry import registry

    assert "shakeshake26_2x96d" in registry("backbone")
    assert registry("backbone").fields("shakeshake26_2x96d") == ()
