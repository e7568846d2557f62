"""The core's contracts: registries, fields that act, config -> component paths, heads, loss terms,
trainer hooks, divergence, and the mutants issue 9 §5 lists (each test names the one it kills)."""

from __future__ import annotations

import math
import re

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from search.cli import main
from spaces.study import define_by_run, parse_study
from trainables.core import (
    SWITCHES,
    ConfigError,
    StepOutput,
    TrainConfig,
    Trainer,
    acting_fields,
    register,
    registry,
    train,
)
from trainables.core import attacks as attacks_mod
from trainables.core.checkpoint import CheckpointError
from trainables.core.losses import Term
from trainables.core.optim import SignSGD
from trainables.core.registry import config_fields, kinds
from trainables.core.run import make_trainer
from trainables.core.trainer import build_data
from trainables.families import FAMILIES

TINY = {"dataset": "digits", "filters": [4, 8], "max_train_samples": 128, "device": "cpu", "batch_size": 64,
        "epochs": 1}


@pytest.fixture(scope="module")
def digits():
    return build_data(TrainConfig.from_dict({"dataset": "digits", "max_train_samples": 128}), torch.device("cpu"))


# ---------------------------------------------------------------- one registry pattern
def test_a_registered_optimizer_is_valid_everywhere_at_once(tmp_path, capsys):
    @register("optimizer", "dummy_sgd")
    def dummy_sgd(params, *, lr: float, nesterov: bool):
        return torch.optim.SGD(params, lr=lr, nesterov=False)

    try:
        assert TrainConfig.from_dict({"optimizer": "dummy_sgd", "nesterov": True}).optimizer == "dummy_sgd"
        with pytest.raises(ConfigError, match="dummy_sgd"):  # listed among the choices
            TrainConfig.from_dict({"optimizer": "nope"})
        with pytest.raises(ConfigError, match=r"when: \{optimizer: \[sgd, sign_sgd\]\}"):
            TrainConfig.from_dict({"optimizer": "dummy_sgd", "momentum": 0.5})  # it does not declare momentum
        study = tmp_path / "dummy.yaml"
        study.write_text("name: dummy\nfamily: optimization\ndataset: digits\nsearch:\n"
                         "  optimizer: {type: choice, values: [sgd, dummy_sgd]}\n"
                         "  nesterov: {type: choice, values: [true, false], when: {optimizer: [sgd, dummy_sgd]}}\n")
        assert main(["validate", str(study)]) == 0, capsys.readouterr().err
        assert train({**TINY, "optimizer": "dummy_sgd"}).history[-1]["epoch"] == 1
    finally:
        registry("optimizer").unregister("dummy_sgd")
    with pytest.raises(ConfigError, match="dummy_sgd"):
        TrainConfig.from_dict({"optimizer": "dummy_sgd"})


def test_builders_cannot_swallow_fields():
    with pytest.raises(TypeError, match="no \\*\\*kw"):
        register("loss", "sloppy")(lambda **kw: None)
    assert "sloppy" not in registry("loss")


def test_every_declared_field_is_a_config_field():
    fields = set(TrainConfig.model_fields)
    for kind in kinds():
        reg = registry(kind)
        for name in reg:
            assert set(config_fields(reg[name])) <= fields, (kind, name)


# ---------------------------------------------------------------- fields that act
@pytest.mark.parametrize("given, message", [
    ({"optimizer": "adam", "momentum": 0.9},
     "`momentum` has no effect with optimizer adam; condition it with `when: {optimizer: [sgd, sign_sgd]}`"),
    ({"model": "resnet18", "filters": [8]}, "`filters` has no effect with model resnet18"),
    ({"model": "cnn", "width": 8}, "`width` has no effect with model cnn"),
    ({"loss": "cross_entropy", "label_smoothing": 0.2}, "`label_smoothing` has no effect with loss cross_entropy"),
    ({"loss": "mse", "focal_gamma": 1.0}, "when: {loss: focal}"),
    ({"scheduler": "cosine", "step_size": 3}, "`step_size` has no effect with scheduler cosine"),
    ({"swa_start": 1}, "when: {swa: true}"),
    ({"adv_steps": 3}, "`adv_steps` has no effect with adv_mode none"),
    ({"adv_mode": "pgd", "adv_eps": 0.1, "gairat_burn_in": 1}, "when: {adv_mode: gairat}"),
    ({"eval_pgd_steps": 5}, "acts only when `eval_eps` is set"),
    ({"augment": False, "crop_padding": 2}, "when: {augment: true}"),
])
def test_a_field_with_no_effect_is_an_error(given, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(given)
    assert message in str(info.value)


def test_defaults_that_do_not_act_are_fine_and_not_recorded():
    cfg = TrainConfig.from_dict({"optimizer": "adam"})
    assert "momentum" not in cfg.to_dict() and "filters" in cfg.to_dict()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_overrides_are_validated():
    cfg = TrainConfig.from_dict({"optimizer": "adam", **TINY})
    with pytest.raises(ConfigError, match="momentum"):
        train(cfg, momentum=0.5)
    with pytest.raises(ConfigError, match="lr"):
        train(cfg, lr=-1.0)


def test_acting_follows_nested_switches():
    assert "leaky_slope" in acting_fields({"activation": "leaky_relu"})
    assert "leaky_slope" not in acting_fields({"activation": "relu"})
    assert "adv_eps" not in acting_fields({"adv_mode": "none"})
    assert {"adv_eps", "gairat_lambda"} <= acting_fields({"adv_mode": "gairat"})


def test_trials_leave_out_fixed_values_that_do_not_act():
    study = parse_study("name: s\nfamily: adversarial\ndataset: digits\nfixed:\n  adv_eps: 0.1\n"
                        "  eval_eps: [0.1]\nsearch:\n  adv_mode: {type: grid, values: [none, pgd]}\n")
    opt = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = opt.ask()
        config = {**define_by_run(study)(trial), **trial.params}
        seen.add(config["adv_mode"])
        assert ("adv_eps" in config) == (config["adv_mode"] != "none")
        TrainConfig.from_dict(config)  # strict: every value acts
    assert seen == {"none", "pgd"}


# ---------------------------------------------------------------- config -> component, for every declared field
# A non-default value for every field some builder declares; a new field must add one here.
TEST_VALUES = {
    "filters": (4, 6), "width": 4, "batchnorm": False, "dropout": 0.25, "leaky_slope": 0.3,
    "label_smoothing": 0.2, "focal_alpha": 0.5, "focal_gamma": 1.5, "l1": 1e-4,
    "lr": 0.02, "momentum": 0.7, "nesterov": True, "weight_decay": 1e-3,
    "step_size": 2, "gamma": 0.5, "min_lr": 1e-4, "plateau_factor": 0.5, "plateau_patience": 2, "warmup_epochs": 1,
    "swa_start": 1, "swa_lr": 0.01,
    "adv_eps": 0.05, "adv_steps": 2, "adv_step_size": 0.02, "adv_beta": 0.5, "gairat_lambda": 0.5,
    "gairat_burn_in": 1,
    "eval_eps": (0.05,), "eval_pgd_steps": 3, "eval_samples": 32, "crop_padding": 1,
    "mu_t": 12.0, "sigma_t": 2.0, "regnet_loss": "simplified", "kurtosis_factor": 0.5, "kurtosis_penalty": "square",
    "milestones": (2, 4),
    "stem": "imagenet", "milestone_fractions": (0.3,), "adv_prob": 0.5, "eval_pgd_step_size": 0.01, "color_jitter": 0.2,
    "eval_datasets": ("digits:invert",), "circle_weight": 0.1, "circle_m": 0.3, "circle_gamma": 64.0,
    "finetune_dataset": "digits:rotate@2", "finetune_per_class": 3, "finetune_epochs": 1, "finetune_lr": 0.02,
    "freeze": "all_but_last_block",
    "kurtosis_estimator": "unbiased", "fgsm_loss": "margin", "pgd_start": "input", "label_smoothing_to": "others",
    "plateau_threshold": 0.01, "plateau_cooldown": 1, "xdomain_normalize": "own",
}
GIVEN = {"activation"}  # declared by backbones, received as the built activation factory


def _switch_value(switch: str, entry: str):
    sw = SWITCHES[switch]
    if sw.when is None:
        return TEST_VALUES[switch] if entry == "on" else ()
    return sw.when(entry)


CASES = [(s, e, f) for s, sw in SWITCHES.items() for e in registry(sw.kind)
         for f in config_fields(registry(sw.kind)[e])]
CASES += [("l1", "l1", "l1")]  # batch terms are always built


@pytest.mark.parametrize("switch, entry, field", CASES, ids=lambda v: str(v))
def test_every_declared_field_reaches_its_component(switch, entry, field, digits, monkeypatch):
    kind = SWITCHES[switch].kind if switch in SWITCHES else "term"
    reg = registry(kind)
    original, received = reg[entry], {}

    def recording(*args, **kwargs):
        received.update(kwargs)
        return original(*args, **kwargs)

    recording.__signature__ = __import__("inspect").signature(original)
    monkeypatch.setitem(reg, entry, recording)
    value = TEST_VALUES[field] if field not in GIVEN else None
    config = {**TINY, "epochs": 3}
    if switch in SWITCHES:
        config[switch] = _switch_value(switch, entry)
    if switch == "model" and entry != "cnn":
        config.pop("filters")
    if kind == "adv_mode" and entry != "none":
        config["adv_eps"] = TEST_VALUES["adv_eps"]
    if field not in GIVEN and (field != switch or kind == "term"):
        config[field] = value
    if field == "color_jitter":
        config["channels"] = 3  # colour jitter is for RGB images only
    if switch == "finetune_dataset" and field != "finetune_epochs":
        config["finetune_epochs"] = 1  # the fine-tuning epochs are the last of the run's 3
    config = {k: v for k, v in config.items() if k in acting_fields(config)}
    make_trainer(TrainConfig.from_dict(config), data=digits)  # the trainer a run of this config gets
    assert field in received, f"{kind} '{entry}' was never built with '{field}'"
    if field in GIVEN:
        assert callable(received[field]) and isinstance(received[field](), nn.Module)
    else:
        got = received[field]
        assert (tuple(got) if isinstance(got, (list, tuple)) else got) == value


def test_focal_and_label_smoothing_reach_the_trainers_loss(digits):
    scores, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    focal = Trainer({**TINY, "loss": "focal", "focal_gamma": 0.0, "focal_alpha": 1.0}, data=digits).loss_fn
    assert torch.allclose(focal(scores, y), F.cross_entropy(scores, y, reduction="none"), atol=1e-6)
    focal3 = Trainer({**TINY, "loss": "focal", "focal_gamma": 3.0}, data=digits).loss_fn
    p = F.softmax(scores, 1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(focal3(scores, y), (1 - p) ** 3 * F.cross_entropy(scores, y, reduction="none"), atol=1e-5)
    smooth = Trainer({**TINY, "loss": "label_smoothing", "label_smoothing": 0.3}, data=digits).loss_fn
    assert torch.allclose(smooth(scores, y), F.cross_entropy(scores, y, reduction="none", label_smoothing=0.3))


# ---------------------------------------------------------------- weight decay (mutants: SGD without it, sign flipped)
def _one_step_with_zero_grad(cfg: dict, digits, w0: float) -> float:
    trainer = Trainer({**TINY, **cfg, "scheduler": "none"}, data=digits)
    p = trainer.optimizer.param_groups[0]["params"][0]
    with torch.no_grad():
        p.fill_(w0)
    p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    return p.flatten()[0].item()


def test_sgd_applies_weight_decay(digits):
    w = _one_step_with_zero_grad({"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.5}, digits, 1.0)
    assert w == pytest.approx(1.0 - 0.1 * 0.5)


@pytest.mark.parametrize("w0", [1.0, -1.0])
def test_sign_sgd_weight_decay_pulls_towards_zero(digits, w0):
    w = _one_step_with_zero_grad({"optimizer": "sign_sgd", "lr": 0.1, "weight_decay": 0.5}, digits, w0)
    assert w == pytest.approx(w0 - 0.1 * math.copysign(1, w0))
    opt = SignSGD([torch.nn.Parameter(torch.ones(1))], lr=0.1, weight_decay=0.0)
    assert opt.param_groups[0]["momentum"] == 0.0  # plain sign-SGD by default


def test_momentum_defaults_follow_the_seed(digits):
    assert Trainer({**TINY, "optimizer": "sgd"}, data=digits).optimizer.param_groups[0]["momentum"] == 0.9
    assert Trainer({**TINY, "optimizer": "sign_sgd"}, data=digits).optimizer.param_groups[0]["momentum"] == 0.0


# ---------------------------------------------------------------- SWA (mutant: BN statistics never recomputed)
def test_swa_batchnorm_statistics_are_recomputed_on_the_training_set(digits):
    cfg = {**TINY, "epochs": 3, "swa": True, "swa_start": 1, "augment": False, "eval_batch_size": 4096}
    result = train(cfg, data=digits)
    model = result.model
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():  # by hand: the first BN's input is the first conv of the normalized images
        x = digits.train.x
        h = first_conv((x - model.mean) / model.std)
    mean = h.mean(dim=(0, 2, 3))
    var = h.var(dim=(0, 2, 3), unbiased=True)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- PGD restarts (mutant: forgetting an earlier success)
def test_pgd_restarts_keep_an_earlier_success(monkeypatch):
    # label 0; restart 1 succeeds (predicts 1) with a low loss, restart 2 fails, restart 3 fails with a
    # higher loss than restart 1: the success must be kept.
    success = torch.tensor([[0.0, 0.1, -10.0]])
    fail = torch.tensor([[5.0, 0.0, 0.0]])
    fail_higher_loss = torch.tensor([[1.0, 0.95, 0.95]])
    y = torch.tensor([0])
    assert F.cross_entropy(fail_higher_loss, y) > F.cross_entropy(success, y)
    assert fail_higher_loss.argmax(1).item() == 0 and success.argmax(1).item() == 1
    sequence = iter([success, fail, fail_higher_loss])
    monkeypatch.setattr(attacks_mod, "_run", lambda *a, **k: (next(sequence).clone(), None))
    x_adv = attacks_mod.pgd(nn.Identity(), torch.zeros(1, 3), y, 0.1, steps=1, restarts=3)
    assert torch.equal(x_adv, success)


# ---------------------------------------------------------------- heads, outputs, batch terms
def test_outputs_match_forward_and_features(digits):
    trainer = Trainer(TINY, data=digits)
    model = trainer.model.eval()
    x = digits.val.x[:5]
    out = model.outputs(x)
    assert isinstance(out, StepOutput)
    assert torch.allclose(out.scores, model(x)) and torch.allclose(out.features, model.features(x))
    assert torch.equal(out.latent, out.scores)  # linear head: the latent is the logits
    assert out.features.shape == (5, model.backbone.out_features)


def test_a_batch_term_sees_the_outputs_and_is_logged(digits, monkeypatch):
    seen = []

    def feature_norm(*, l1: float):
        def fn(out, y, model):
            seen.append(out.features.shape[1])
            return out.features.pow(2).mean()

        return Term("feature_norm", 0.5, fn)

    monkeypatch.setitem(registry("term"), "feature_norm", feature_norm)
    result = train({**TINY, "epochs": 2}, data=digits)
    assert seen and seen[0] == 256
    assert all(m["train_feature_norm"] > 0 for m in result.history)


def test_l1_term_is_logged_and_in_the_family_metrics():
    result = train({**TINY, "l1": 1e-4})
    assert result.history[-1]["train_l1"] > 0
    assert "train_l1" in FAMILIES["optimization"].metrics({"l1": 1e-4})
    assert "train_l1" not in FAMILIES["optimization"].metrics({})


def test_loss_none_leaves_the_objective_to_the_terms(digits):
    result = train({**TINY, "loss": "none", "l1": 1e-3}, data=digits)
    m = result.history[-1]
    assert m["train_loss"] == pytest.approx(1e-3 * m["train_l1"], rel=1e-4)


# ---------------------------------------------------------------- trainer hooks
def test_frozen_trunk_stays_frozen_with_its_batchnorm_in_eval(digits):
    def head_only(model):
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        return list(model.head.parameters())

    trainer = Trainer({**TINY, "epochs": 2}, data=digits, trainable=head_only)
    trunk = {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}
    head = [p.clone() for p in trainer.model.head.parameters()]
    trainer.fit()
    after = trainer.model.backbone.state_dict()
    assert all(torch.equal(trunk[k], after[k]) for k in trunk if "num_batches" not in k)  # BN stats too
    assert any(not torch.equal(a, b) for a, b in zip(head, trainer.model.head.parameters()))


def test_a_frozen_part_keeps_its_dropout_off_and_a_trainable_one_keeps_it_on(digits):
    """One rule for every trainer: a module whose parameters are all frozen trains in eval mode."""
    trainer = Trainer({**TINY, "dropout": 0.5}, data=digits)
    dropouts = lambda: [m for m in trainer.model.backbone.modules() if isinstance(m, nn.Dropout)]  # noqa: E731
    assert dropouts()
    trainer.train_mode(trainer.model)
    assert all(m.training for m in dropouts())  # nothing frozen: dropout acts
    for p in trainer.model.backbone.parameters():
        p.requires_grad_(False)
    trainer.train_mode(trainer.model)
    assert not any(m.training for m in dropouts()) and trainer.model.head.training
    x = trainer.data.train.x[:8]
    assert torch.equal(trainer.model.backbone(x), trainer.model.backbone(x))  # a frozen trunk is deterministic


def test_init_from_a_truncated_file_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "half.pt"
    bad.write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(CheckpointError, match="unreadable"):
        make_trainer({**TINY, "init_from": str(bad)})


def test_evaluators_finalizers_and_a_monotonic_step_across_phases(digits):
    calls = []
    trainer = Trainer({**TINY, "epochs": 2}, data=digits, evaluators=[lambda t: {"probe": float(t.step)}],
                      finalizers=[lambda t: calls.append(t.step)])
    trainer.fit()
    trainer.new_phase(lr=0.01, epochs=2)
    result = trainer.fit()
    assert [m["epoch"] for m in result.history] == [1, 2, 3, 4]
    assert [m["probe"] for m in result.history] == [1.0, 2.0, 3.0, 4.0]
    assert calls == [2, 4]  # once at the end of each phase
    with pytest.raises(ConfigError):
        trainer.new_phase(momentum=0.5, optimizer="adam")


# ---------------------------------------------------------------- divergence, val_nll, global RNG
def test_a_non_finite_loss_stops_the_run(digits):
    seen = []
    result = train({**TINY, "epochs": 5, "lr": 1e6, "batchnorm": False, "scheduler": "none"}, data=digits,
                   on_epoch=lambda m, t: seen.append(m))
    assert result.status == "diverged" and result.reason.startswith("non-finite training loss at epoch ")
    last = result.history[-1]
    assert last["diverged"] == 1.0 and math.isnan(last["val_acc"]) and math.isnan(last["val_nll"])
    assert len(result.history) < 5 and seen[-1] is last


def test_val_nll_is_plain_cross_entropy(digits):
    result = train({**TINY, "loss": "label_smoothing", "label_smoothing": 0.3, "epochs": 3}, data=digits)
    model, val = result.model, digits.val
    with torch.no_grad():
        nll = F.cross_entropy(model(val.x), val.y).item()
        smoothed = F.cross_entropy(model(val.x), val.y, label_smoothing=0.3).item()
    m = result.history[-1]
    assert m["val_nll"] == pytest.approx(nll, rel=1e-4)
    assert m["val_loss"] == pytest.approx(smoothed, rel=1e-4)
    assert abs(nll - smoothed) > 1e-3


def test_the_trainer_leaves_the_global_rng_alone(digits):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    train({**TINY, "dropout": 0.3, "epochs": 2}, data=digits)
    assert torch.equal(torch.get_rng_state(), state)


def test_field_descriptions_say_what_a_field_does_not_where_its_value_came_from():
    """Project history (which seed or report printed a value) lives in docs/seeds.md, not in what users read."""
    history = re.compile(r"homework|seeds? 0\d\d|thesis: ", re.IGNORECASE)
    told = {name: f.description for name, f in TrainConfig.model_fields.items() if f.description}
    assert {name: d for name, d in told.items() if history.search(d)} == {}
