"""Registries (models, activations, losses) and config validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.core import ACTIVATIONS, LOSSES, MODELS, ConfigError, TrainConfig, build_model
from trainables.core.models import Network
from trainables.core.registry import Registry, build, registry

TINY_MODEL = {"width": 4, "filters": (4, 8)}


def tiny_model(name: str, channels: int = 3, size: int = 8, **kw) -> Network:
    torch.manual_seed(0)
    declared = registry("backbone").fields(name)
    sizing = {k: TINY_MODEL[k] for k in ("filters", "width") if k in declared}  # shake-shake has a fixed width
    return build_model(name, in_channels=channels, num_classes=5, image_size=size, mean=(0.5,) * channels,
                       std=(0.25,) * channels, **{**sizing, **kw})


def build_loss(name: str, **fields):
    """The registered loss built from a validated config naming it (the path the trainer takes)."""
    return build("loss", name, TrainConfig.from_dict({"loss": name, **fields}))


def activation(name: str, slope: float = 0.1) -> nn.Module:
    fields = {"leaky_slope": slope} if name == "leaky_relu" else {}
    return build("activation", name, TrainConfig.from_dict({"activation": name, **fields}))()


# ---------------------------------------------------------------- models
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model_builds_and_takes_a_training_step(name, channels):
    model = tiny_model(name, channels)
    x, y = torch.rand(6, channels, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    torch.manual_seed(1)  # the same seed for both passes: shake-shake draws its mixing weights in training
    feats = model.features(x)
    assert feats.ndim == 2 and feats.shape[0] == 6
    assert feats.shape[1] == model.backbone.out_features == model.head.fc.in_features  # what the head sees
    torch.manual_seed(1)
    logits = model(x)
    assert logits.shape == (6, 5)
    assert torch.allclose(logits, model.head(feats), atol=1e-5)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    F.cross_entropy(logits, y).backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert all(changed), "every parameter should receive a gradient step"


def test_network_normalizes_inside():
    model = tiny_model("cnn", 1)
    model.eval()
    # mean 0.5 / std 0.25 inside: a constant 0.5 image reaches the backbone as zeros
    x = torch.full((2, 1, 8, 8), 0.5)
    assert torch.allclose(model.features(x), model.backbone(torch.zeros_like(x)))
    assert model.mean.flatten().tolist() == [0.5] and model.std.flatten().tolist() == [0.25]
    assert "mean" in model.state_dict()  # buffers travel with checkpoints


def test_unknown_model_lists_the_choices():
    with pytest.raises(ValueError, match="resnet18"):
        build_model("resnet7", in_channels=3, num_classes=10, image_size=8, mean=(0,), std=(1,))


@pytest.mark.parametrize("name", ["cnn", "resnet18", "resnet50", "vgg11"])
def test_batchnorm_toggle_removes_batchnorm_layers(name):
    def count(model, kind):
        return sum(isinstance(m, kind) for m in model.modules())

    with_bn, without_bn = tiny_model(name, batchnorm=True), tiny_model(name, batchnorm=False)
    assert count(with_bn, nn.BatchNorm2d) > 0
    assert count(without_bn, nn.BatchNorm2d) == 0
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in without_bn.modules())
    convs = [m for m in without_bn.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.bias is not None for c in convs)  # without BN, convolutions get their bias back
    assert all(c.bias is None for c in with_bn.modules() if isinstance(c, nn.Conv2d))
    # without BN the output of a sample does not depend on the rest of the batch, even in train mode
    x = torch.rand(4, 3, 8, 8)
    without_bn.train()
    assert torch.allclose(without_bn(x)[:1], without_bn(x[:1]), atol=1e-5)


# ---------------------------------------------------------------- activations
REFERENCE = {
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "elu": F.elu,
    "gelu": F.gelu,
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
}


def test_activation_reference_covers_the_registry():
    assert set(REFERENCE) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_computes_its_function_and_trains(name):
    x = torch.linspace(-3, 3, 61)
    assert torch.allclose(activation(name, 0.2)(x.clone()), REFERENCE[name](x), atol=1e-6)

    model = tiny_model("cnn", activation=name, **({"leaky_slope": 0.2} if name == "leaky_relu" else {}))
    acts = [m for m in model.modules() if type(m) is type(activation(name, 0.2))]
    assert len(acts) == len(TINY_MODEL["filters"]) + 2  # one per conv block and two in the classifier
    loss = F.cross_entropy(model(torch.rand(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_unknown_activation_lists_the_choices():
    with pytest.raises(ValueError, match="mish"):
        build("activation", "sigmoidish", TrainConfig())


# ---------------------------------------------------------------- losses
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_per_sample_and_non_negative(name):
    torch.manual_seed(0)
    logits = torch.randn(7, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    loss = build_loss(name)(logits, y)
    assert loss.shape == (7,)
    assert (loss >= 0).all()
    if name == "none":
        assert not loss.any()
        return
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # per sample: each entry depends on its own row only
    again = build_loss(name)(logits.detach()[2:3], y[2:3])
    assert torch.allclose(again, loss.detach()[2:3], atol=1e-6)


def test_losses_prefer_the_right_answer():
    y = torch.tensor([1])
    good, bad = torch.tensor([[0.0, 5.0, 0.0]]), torch.tensor([[5.0, 0.0, 0.0]])
    for name in LOSSES:
        if name == "none":
            continue
        fn = build_loss(name)
        assert fn(good, y).item() < fn(bad, y).item(), name


def test_focal_with_gamma_0_and_alpha_1_is_cross_entropy():
    torch.manual_seed(1)
    logits, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    focal = build_loss("focal", focal_alpha=1.0, focal_gamma=0.0)(logits, y)
    assert torch.allclose(focal, F.cross_entropy(logits, y, reduction="none"), atol=1e-6)
    # gamma > 0 down-weights easy examples: never more than CE
    assert (build_loss("focal", focal_alpha=1.0, focal_gamma=2.0)(logits, y) <= focal + 1e-7).all()
    assert torch.allclose(build_loss("focal", focal_alpha=0.25, focal_gamma=0.0)(logits, y), 0.25 * focal, atol=1e-6)


def test_label_smoothing_differs_from_cross_entropy():
    torch.manual_seed(2)
    logits, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    ce = build_loss("cross_entropy")(logits, y)
    smooth = build_loss("label_smoothing", label_smoothing=0.2)(logits, y)
    assert not torch.allclose(ce, smooth)
    # (1 - s) * CE + s * mean over classes of -log p
    expected = 0.8 * ce - 0.2 * F.log_softmax(logits, 1).mean(1)
    assert torch.allclose(smooth, expected, atol=1e-5)
    assert torch.allclose(build_loss("label_smoothing", label_smoothing=0.0)(logits, y), ce)


def test_softmax_mse_loss_is_bounded():
    logits, y = torch.randn(32, 10) * 10, torch.randint(0, 10, (32,))
    loss = build_loss("softmax_mse")(logits, y)
    assert (loss <= 2.0 + 1e-6).all()


def test_mse_is_seed_003s_nn_mseloss_on_one_hot():
    logits, y = torch.randn(32, 10), torch.randint(0, 10, (32,))
    expected = nn.MSELoss()(logits, F.one_hot(y, 10).float())
    assert torch.allclose(build_loss("mse")(logits, y).mean(), expected, atol=1e-6)


def test_unknown_loss_lists_the_choices():
    with pytest.raises(ValueError, match="focal"):
        build("loss", "hinge", TrainConfig())


# ---------------------------------------------------------------- config validation
def config_error(**kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(kw)
    return info.value


def test_defaults_are_valid_and_config_round_trips():
    cfg = TrainConfig.from_dict({"filters": [8, 16], "activation": "mish"})
    assert cfg.filters == (8, 16)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_activation_error_lists_valid_choices():
    err = config_error(activation="swishy")
    assert "mish" in str(err) and "leaky_relu" in str(err) and "swishy" in str(err)


def test_unknown_key_suggests_the_nearest():
    err = config_error(learning_rate=0.1, batchsize=32)
    message = str(err)
    assert "did you mean 'batch_size'" in message
    assert "learning_rate" in message
    assert [loc for loc, _ in err.problems] == [("learning_rate",), ("batchsize",)]  # each at its key


def test_negative_lr_is_rejected():
    err = config_error(lr=-0.1)
    assert any(loc == ("lr",) and "greater than 0" in msg for loc, msg in err.problems), err.problems
    assert "-0.1" in str(err)


def test_warmup_with_plateau_is_rejected():
    err = config_error(scheduler="plateau", warmup_epochs=2)
    assert "`warmup_epochs` has no effect with scheduler plateau" in str(err)
    assert "when: {scheduler: [step, cosine]}" in str(err)
    config_error(scheduler="cosine", warmup_epochs=5, epochs=5)  # warmup must leave room for the schedule


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"model": "resnet7"}, "resnet18"),
        ({"loss": "hinge"}, "label_smoothing"),
        ({"dataset": "imagenet"}, "fashion_mnist"),
        ({"optimizer": "rmsprop"}, "sign_sgd"),
        ({"scheduler": "linear"}, "onecycle"),
    ],
)
def test_unknown_choice_lists_the_valid_ones(bad, expected):
    assert expected in str(config_error(**bad))


def test_every_problem_is_reported_at_once():
    err = config_error(activation="nope", lr=-1, epochz=3)
    assert len(err.problems) == 3
    assert str(err).count("\n  - ") == 3


def test_registration_happens_in_the_package_init_and_kinds_are_those_registered():
    """Importing any core module registers every component (the package __init__ imports the registering
    modules, timm's way); no module registers others as a side effect of its own imports."""
    import subprocess
    import sys

    probe = ("from trainables.core.registry import kinds, registry\n"
             "print(sorted(kinds())); print('shakeshake26_2x96d' in registry('backbone'), 'gaussian' in registry('head'))\n"
             "try:\n    registry('optimiser')\nexcept ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert {"dataset", "backbone", "head", "loss", "term", "optimizer", "scheduler", "freeze",
            "corruption"} <= set(eval(out[0]))
    assert out[1] == "True True"
    assert out[2].startswith("unknown registry kind 'optimiser'; choose one of: ") and "optimizer" in out[2]
    config_src = (Path(__file__).resolve().parents[2] / "trainables/core/config.py").read_text()
    assert "registers" not in config_src.split('"""', 2)[2].split("class ")[0]  # no registration imports there


def test_corruptions_are_a_core_registry_read_by_name_validation_and_the_docs():
    """``CORRUPTIONS`` is the core's ``corruption`` registry: registering a corruption makes its domain names
    valid (and unregistering invalid); the generalization docs name every registered corruption."""
    from trainables.core.corruptions import CORRUPTIONS, register_corruption
    from trainables.core.domain_names import parse_name

    assert registry("corruption") is CORRUPTIONS and isinstance(CORRUPTIONS, Registry)
    register_corruption("halve_for_test", ((),), "x / 2")(lambda x, level, g: x / 2)
    try:
        assert parse_name("digits:halve_for_test").corruption == "halve_for_test"
        assert CORRUPTIONS["halve_for_test"].doc == "x / 2" and not CORRUPTIONS["halve_for_test"].has_severity
    finally:
        CORRUPTIONS.unregister("halve_for_test")
    with pytest.raises(ValueError, match="unknown corruption 'halve_for_test'"):
        parse_name("digits:halve_for_test")
    docs = (Path(__file__).resolve().parents[2] / "docs/generalization.md").read_text()
    assert [c for c in CORRUPTIONS if f"`{c}" not in docs] == []
