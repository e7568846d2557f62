"""The generalization family end to end: cross-domain metrics, freeze + fine-tune, real-format loaders,
Circle loss in training, the homework's options, and the config paths of its fields."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY
from test_data import write_mnist, write_svhn

from records import TrialTracker, rank
from trainables.core import ConfigError, TrainConfig, train
from trainables.core import data as data_mod
from trainables.core.finetune import TransferTrainer
from trainables.core.run import make_trainer
from trainables.families import FAMILIES

RESNET = {**{k: v for k, v in TINY.items() if k != "filters"}, "model": "resnet18", "width": 4,
          "max_train_samples": 200, "batch_size": 32}
FINETUNE = {**RESNET, "epochs": 3, "finetune_dataset": "digits:rotate@4", "finetune_per_class": 5,
            "finetune_epochs": 1, "finetune_lr": 0.5}


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unexpected download attempt")

    monkeypatch.setattr(data_mod, "_torchvision_download", refuse)


# ---------------------------------------------------------------- cross-domain evaluation
def test_k_targets_report_k_cross_domain_metrics_every_epoch():
    targets = ["digits:rotate", "digits:invert", "digits:gaussian_noise@5"]
    cfg = {**TINY, "epochs": 3, "eval_datasets": targets, "max_train_samples": 600}
    result = train(cfg)
    names = ["xdomain_acc_digits_rotate_3", "xdomain_acc_digits_invert", "xdomain_acc_digits_gaussian_noise_5"]
    for m in result.history:
        assert [k for k in m if k.startswith("xdomain_acc_")] == names
        assert all(0.0 <= m[k] <= 1.0 for k in names)
    last = result.history[-1]
    assert last["xdomain_acc_digits_invert"] < last["val_acc"] - 0.3  # inverted digits are a real shift
    for family in ("generalization", "optimization"):
        assert set(names) <= set(FAMILIES[family].metrics(cfg))


def test_target_accuracy_is_that_of_the_corrupted_test_split():
    from trainables.core.crossdomain import accuracy
    from trainables.core.data import load_data

    result = train({**TINY, "epochs": 1, "eval_datasets": ["digits:blur@5"]})
    target = load_data("digits:blur@5").test
    assert result.final["xdomain_acc_digits_blur_5"] == pytest.approx(accuracy(result.model, target))


@pytest.mark.parametrize("bad, says", [
    ({"dataset": "fashion_mnist", "eval_datasets": ["digits"]}, "same label space"),
    ({"eval_datasets": ["digits:melt"]}, "unknown corruption 'melt'"),
    ({"eval_datasets": ["digits:rotate", "digits:rotate@3"]}, "listed twice"),
    ({"dataset": "digits:rotate@9"}, "integer 1..5"),
    ({"finetune_dataset": "digits:rotate", "finetune_epochs": 2}, "must be < epochs (2)"),
    ({"color_jitter": 0.2}, "color_jitter needs RGB"),
    ({"circle_m": 0.3}, "`circle_m` has no effect"),
    ({"freeze": "trunk"}, "`freeze` has no effect"),
    ({"finetune_per_class": 3}, "`finetune_per_class` has no effect"),
    ({"model": "cnn", "stem": "imagenet"}, "`stem` has no effect"),
    ({"model": "resnet18", "pretrained": "imagenet", "filters": None}, "pretrained: imagenet loads"),
    ({"scheduler": "cosine", "milestone_fractions": [0.5]}, "`milestone_fractions` has no effect"),
    ({"adv_prob": 0.5}, "`adv_prob` has no effect"),
])
def test_invalid_generalization_configs_say_why(bad, says):
    cfg = {**TINY, "epochs": 2, **bad}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    with pytest.raises(ConfigError, match=re.escape(says)):
        TrainConfig.from_dict(cfg)


def test_corruption_domain_as_the_training_dataset():
    result = train({**TINY, "dataset": "digits:translate@2", "epochs": 2, "eval_datasets": ["digits"]})
    assert "translate@2" in result.data_source and "generated here" in result.data_source
    assert result.final["val_acc"] > 0.3 and "xdomain_acc_digits" in result.final


def test_targets_load_with_the_runs_class_subset_and_split_seed():
    """A cross-domain target, the fine-tuning target and its k-shot pool all load like the run's data
    (one ``DataSpec``): the same classes, relabelled alike, and domains drawn with the run's split seed."""
    from trainables.core.crossdomain import CrossDomainEval
    from trainables.core.data import DataSpec, load_data

    cfg = {**TINY, "epochs": 2, "classes": [3, 1, 7], "split_seed": 4, "max_train_samples": 60,
           "eval_datasets": ["digits:invert"], "finetune_dataset": "digits:rotate@4", "finetune_per_class": 2,
           "finetune_epochs": 1}
    trainer = make_trainer(cfg)
    spec = DataSpec.of(trainer.plan)
    assert spec.target("digits:invert", 1, 8) == DataSpec("digits:invert", split_seed=4, channels=1, size=8,
                                                          classes=(3, 1, 7))  # every sample of the target
    like = {"classes": [3, 1, 7], "split_seed": 4}
    xdomain = next(e for e in trainer.evaluators if isinstance(e, CrossDomainEval))
    invert = load_data("digits:invert", **like).test
    assert torch.equal(xdomain.splits[0].x, invert.x) and torch.equal(xdomain.splits[0].y, invert.y)
    assert sorted(set(invert.y.tolist())) == [0, 1, 2] and len(invert) < len(load_data("digits:invert").test) / 2
    rotated = load_data("digits:rotate@4", **like)
    assert torch.equal(trainer._target_split().x, rotated.test.x)
    assert not torch.equal(rotated.test.x, load_data("digits:rotate@4", classes=[3, 1, 7]).test.x)  # seed acts
    trainer.enter_finetune()
    assert trainer.data.train.y.bincount().tolist() == [2, 2, 2]
    pool = rotated.train.x.flatten(1)
    for x in trainer.data.train.x.flatten(1):  # each k-shot sample is one of the target's training samples
        assert (pool == x).all(1).any()


# ---------------------------------------------------------------- SVHN <-> MNIST on files in their real formats
def test_svhn_mat_and_mnist_idx_feed_a_cross_domain_trial(tmp_path):
    write_svhn(tmp_path)
    write_mnist(tmp_path)
    cfg = {"dataset": "svhn", "data_dir": str(tmp_path), "filters": [4], "epochs": 2, "batch_size": 8,
           "device": "cpu", "eval_datasets": ["mnist", "mnist:rotate@2"]}
    result = train(cfg)
    assert result.data_source == str(tmp_path)
    for m in result.history:
        assert {"xdomain_acc_mnist", "xdomain_acc_mnist_rotate_2"} <= set(m)
    # and the reverse direction: MNIST (1 channel, 28 px) as source, SVHN converted to it
    back = train({**cfg, "dataset": "mnist", "eval_datasets": ["svhn"]})
    assert 0.0 <= back.final["xdomain_acc_svhn"] <= 1.0


# ---------------------------------------------------------------- freeze and fine-tune
def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("freeze", ["trunk", "all_but_last_block"])
def test_freezing_really_freezes_params_and_bn_statistics(freeze):
    at_switch = {}

    def on_epoch(metrics, trainer):
        if trainer.phase == 0 and trainer.epoch == trainer.cfg.epochs:
            at_switch["backbone"], at_switch["head"] = _snapshot(trainer.model.backbone), _snapshot(trainer.model.head)

    trainer = make_trainer({**FINETUNE, "freeze": freeze})
    assert isinstance(trainer, TransferTrainer)
    trainer.fit(on_epoch)
    assert trainer.phase == 1 and trainer.step == 3
    after = trainer.model.backbone.state_dict()
    from trainables.core.transfer import last_block

    block = {id(t) for t in list(last_block(trainer.model.backbone).parameters())
             + list(last_block(trainer.model.backbone).buffers())}
    live = trainer.model.backbone.state_dict(keep_vars=True)
    frozen_keys = [k for k in after if freeze == "trunk" or id(live[k]) not in block]
    assert any("running_mean" in k for k in frozen_keys)
    for k in frozen_keys:
        assert torch.equal(after[k], at_switch["backbone"][k]), k
    head = trainer.model.head.state_dict()
    assert any(not torch.equal(v, at_switch["head"][k]) for k, v in head.items())
    if freeze == "all_but_last_block":
        assert any(not torch.equal(after[k], at_switch["backbone"][k]) for k in after if k not in frozen_keys)


def test_finetune_run_reports_one_monotonic_step_and_before_after():
    result = train(FINETUNE)
    assert [m["epoch"] for m in result.history] == [1, 2, 3]
    assert all("finetune_acc" in m and "finetune_acc_before" in m for m in result.history)
    # the target accuracy while pretraining is "before"; finetune_acc exists on fine-tuning epochs only
    assert [math.isnan(m["finetune_acc"]) for m in result.history] == [True, True, False]
    assert result.history[-1]["finetune_acc_before"] == result.history[1]["finetune_acc_before"]
    assert result.history[0]["finetune_acc_before"] != result.history[1]["finetune_acc_before"]


def test_a_finetune_objective_ranks_trials_on_finetuned_accuracy_only():
    """Pretraining scores higher on the target than fine-tuning here (both trials share their pretraining, so
    the old reading tied them at epoch 2); the best epoch must be a fine-tuning one and the ranking its value."""
    table, finals = [], {}
    for trial, lr in (("t_small_lr", 0.5), ("t_large_lr", 50.0)):
        history = train({**FINETUNE, "finetune_lr": lr}).history
        assert max(m["finetune_acc_before"] for m in history) > history[-1]["finetune_acc"]
        tracker = TrialTracker("finetune_acc", "max", max_epochs=3)
        for m in history:
            tracker.result(trial, m)
        best = tracker.get(trial)
        assert best.best_epoch == 3 and best.best == history[-1]["finetune_acc"]
        finals[trial] = history[-1]["finetune_acc"]
        table.append({"trial": trial, "best_finetune_acc": best.best, "best_epoch": best.best_epoch,
                      "outcome": "completed"})
    ranked = rank(pd.DataFrame(table), "best_finetune_acc", "max")
    assert list(ranked["trial"]) == sorted(finals, key=finals.get, reverse=True)
    assert finals["t_small_lr"] != finals["t_large_lr"]
    assert "finetune_acc" in FAMILIES["generalization"].metrics(FINETUNE)


def test_finetune_uses_k_samples_per_class_and_only_trainable_parameters():
    trainer = make_trainer({**FINETUNE, "finetune_epochs": 2, "epochs": 2, "init_from": None} | {"epochs": 3})
    trainer.fit()
    counts = torch.bincount(trainer.data.train.y, minlength=10)
    assert counts.tolist() == [5] * 10
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in trainer.model.head.parameters()}


def test_init_from_a_checkpoint_then_only_finetune(tmp_path):
    pre = make_trainer({**RESNET, "epochs": 2})
    pre.fit()
    path = pre.save_checkpoint(tmp_path / "pre.pt")
    cfg = {**FINETUNE, "epochs": 1, "finetune_epochs": 1, "init_from": str(path)}
    trainer = make_trainer(cfg)
    assert trainer.phase == 1  # no pretraining epochs: straight to fine-tuning
    for k, v in pre.model.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[k], v)
    result = trainer.fit()
    assert [m["epoch"] for m in result.history] == [1]
    assert result.history[0]["finetune_acc_before"] == pytest.approx(trainer.before)


def test_resume_inside_the_finetune_phase_matches_an_uninterrupted_run(tmp_path):
    cfg = {**FINETUNE, "epochs": 4, "finetune_epochs": 2}
    whole = make_trainer(cfg)
    whole.fit()

    first = make_trainer(cfg)
    saved = {}

    def stop_after_3(metrics, trainer):
        if trainer.step == 3:
            saved["path"] = trainer.save_checkpoint(tmp_path / "mid.pt")
            return True

    first.fit(stop_after_3)
    again = make_trainer(cfg)
    again.load_checkpoint(saved["path"])
    assert again.phase == 1 and again.step == 3
    again.fit()
    assert again.step == 4
    for k, v in whole.model.state_dict().items():
        assert torch.allclose(again.model.state_dict()[k].float(), v.float(), atol=1e-6), k


# ---------------------------------------------------------------- Circle loss and the homework's options
def test_circle_term_is_logged_and_combines_with_label_smoothing_and_adversarial_training():
    cfg = {**TINY, "epochs": 1, "circle_weight": 0.1, "circle_gamma": 32.0, "loss": "label_smoothing",
           "label_smoothing": 0.1, "adv_mode": "fgsm", "adv_eps": 0.1, "adv_prob": 0.5}
    result = train(cfg)
    assert result.final["train_circle"] > 0
    assert "train_circle" in FAMILIES["generalization"].metrics(cfg)


def test_plain_fgsm_training_steps_exactly_eps_without_random_start(monkeypatch):
    from trainables.core import robustness as adversarial

    seen = {}
    real = adversarial.fgsm

    def spy(model, x, y, eps, **kw):
        seen.update(kw, eps=eps)
        return real(model, x, y, eps, **kw)

    monkeypatch.setattr(adversarial, "fgsm", spy)
    train({**TINY, "epochs": 1, "adv_mode": "fgsm", "adv_eps": 0.05})
    assert seen == {"random_start": False, "step_size": 0.05, "eps": 0.05}


def test_adv_prob_trains_on_about_that_share_of_adversarial_batches(monkeypatch):
    from trainables.core import robustness as adversarial

    calls = {"adv": 0}
    real = adversarial.fgsm

    def count(*a, **kw):
        calls["adv"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(adversarial, "fgsm", count)
    trainer = make_trainer({**TINY, "epochs": 2, "batch_size": 16, "adv_mode": "fgsm", "adv_eps": 0.05,
                            "adv_prob": 0.3})
    trainer.fit()
    batches = 2 * trainer.steps_per_epoch
    assert 0.15 * batches < calls["adv"] < 0.45 * batches


def test_multistep_decays_at_the_milestone_fractions():
    result = train({**TINY, "epochs": 8, "scheduler": "multistep_fraction", "milestone_fractions": [0.25, 0.75], "gamma": 0.1,
                    "lr": 0.1})
    lrs = [round(m["lr"], 6) for m in result.history]
    assert lrs == [0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.001, 0.001]


def test_imagenet_stem_downsamples_four_times():
    from trainables.core.trainer import build_model

    args = dict(in_channels=3, num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, width=8)
    cifar = build_model("resnet18", **args)
    imagenet = build_model("resnet18", stem="imagenet", **args)
    x = torch.rand(2, 3, 32, 32)
    assert cifar.backbone[0].kernel_size == (3, 3) and imagenet.backbone[0].kernel_size == (7, 7)
    assert isinstance(imagenet.backbone[3], torch.nn.MaxPool2d)
    assert imagenet.backbone[:4]((x - 0.5) / 0.5).shape[-1] == 8 and cifar.backbone[:3](x).shape[-1] == 32


def test_pretrained_imagenet_loads_torchvision_weights_from_the_local_cache(tmp_path, monkeypatch):
    from trainables.core import pretrained
    from trainables.core.torchvision_compat import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18().eval()  # random weights standing in for ImageNet's
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = pretrained.cache_path()
    assert str(path).startswith(str(tmp_path))
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    cfg = {"dataset": "cifar10", "model": "resnet18", "stem": "imagenet", "pretrained": "imagenet", "device": "cpu"}
    from trainables.core.data import DATASETS
    from trainables.core.trainer import network_for

    model = network_for(TrainConfig.from_dict(cfg), DATASETS["cifar10"], 3, 32).eval()
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(pretrained.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(pretrained.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = model.features(x)
        theirs = torch.flatten(reference.avgpool(reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1((x - mean) / std))))))))), 1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_pretrained_imagenet_says_where_to_put_the_weights_when_offline(tmp_path, monkeypatch):
    from trainables.core import pretrained

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(pretrained.PretrainedUnavailable, match=re.escape(str(pretrained.cache_path()))):
        pretrained.imagenet_resnet18_state()


def test_color_jitter_reaches_rgb_training():
    result = train({**TINY, "channels": 3, "color_jitter": 0.3, "epochs": 1})
    assert result.final["val_acc"] > 0


# ---------------------------------------------------------------- predictions -> diagnostics
def test_saved_predictions_draw_every_diagnostic(tmp_path):
    from analysis.diagnostics import from_predictions
    from trainables.generalization import PREDICTIONS_FILE, save_predictions

    trainer = make_trainer({**TINY, "epochs": 1, "eval_datasets": ["digits:invert"], "max_train_samples": 300})
    trainer.fit()
    path = save_predictions(trainer, tmp_path)
    assert path.name == PREDICTIONS_FILE
    assert torch.load(path, weights_only=True)["grid"]["images"]["pgd"].shape[0] == 8
    results = from_predictions(path, tmp_path / "diag", umap=False)
    assert set(results) == {"digits", "digits:invert", "pgd_sweep"}
    assert results["digits"]["acc"] == pytest.approx(trainer.history[-1]["test_acc"])
    sweep = results["pgd_sweep"]
    assert list(sweep) == ["pgd1_acc", "pgd2_acc", "pgd4_acc", "pgd7_acc", "pgd10_acc"]
    assert sweep["pgd10_acc"] <= sweep["pgd1_acc"] + 0.02 and sweep["pgd1_acc"] <= results["digits"]["acc"]
    for png in ("confusion_digits.png", "confusion_digits_invert.png", "risk_coverage.png", "adversarial_grid.png",
                "pgd_sweep.png"):
        assert (tmp_path / "diag" / png).stat().st_size > 1000


# ---------------------------------------------------------------- init_from: search:NAME
def test_init_from_search_name_resolves_to_that_searchs_best_checkpoint(tmp_path, monkeypatch):
    import records
    from search.driver import SearchMeta
    from search.errors import SearchError
    from search.tuner import resolve_init_from
    from spaces.study import parse_study

    study = parse_study("name: s\nfamily: generalization\ndataset: digits\nfixed:\n  init_from: search:prev\n"
                        "  finetune_dataset: digits:invert\n  finetune_epochs: 2\nsearch:\n"
                        "  finetune_per_class: {type: choice, values: [5, 10]}\nbudget: {max_epochs: 2, grace_period: 1}\n")
    meta = SearchMeta("now", str(tmp_path / "runs" / "now" / "study.yaml"), "sqlite:///x.db", "run", "tpe", 2, None,
                      str(tmp_path / "runs"))
    calls = []

    def info(name, uri):
        calls.append(name)
        if name != "prev":
            raise records.SearchNotFound(f"no search named '{name}'")
        return name

    def download(found, dst):
        path = Path(dst) / "checkpoint.pt"  # as MLflow downloads best_model/checkpoint.pt into dst
        path.parent.mkdir(parents=True)
        path.write_bytes(b"weights")
        return path

    monkeypatch.setattr(records, "search_info", info)
    monkeypatch.setattr(records, "download_checkpoint", download)
    resolved = resolve_init_from(study, meta)
    path = Path(resolved.fixed["init_from"])
    assert path.is_file() and path.parts[-3:] == ("init_from", "prev", "checkpoint.pt")
    assert resolve_init_from(study, meta).fixed["init_from"] == str(path) and calls == ["prev"]  # downloaded once
    other = study.model_copy(update={"fixed": {**study.fixed, "init_from": "search:absent"}})
    with pytest.raises(SearchError, match="fixed.init_from: no search named 'absent'"):
        resolve_init_from(other, meta)
    with pytest.raises(FileNotFoundError, match="resolves search:NAME"):
        make_trainer({**FINETUNE, "init_from": "search:prev"})


def test_diagnostics_from_a_checkpoint_without_saved_predictions(tmp_path):
    from analysis.diagnostics import from_predictions, predictions_from_checkpoint

    trainer = make_trainer({**TINY, "epochs": 1, "eval_datasets": ["digits:invert"], "max_train_samples": 300})
    trainer.fit()
    found = predictions_from_checkpoint(trainer.save_checkpoint(tmp_path / "best.pt"))
    assert list(found["domains"]) == ["digits", "digits:invert"]
    results = from_predictions(found, tmp_path / "diag", umap=False)
    assert results["digits"]["acc"] == pytest.approx(trainer.history[-1]["test_acc"])
