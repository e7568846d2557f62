"""The generalization family's pure parts: corruption domains, Circle loss, diagnostics."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from analysis import diagnostics as dg
from trainables.core.circle import CircleLoss, circle_loss
from trainables.core.corruptions import CORRUPTIONS
from trainables.core.data import load_data
from trainables.core.domain_names import parse_name
from trainables.core.domains import corrupt
from trainables.core.infos import DEFAULT_SEVERITY
from trainables.core.metric_names import xdomain_metric_name

MLFLOW_METRIC = re.compile(r"^[A-Za-z0-9_\-. /]+$")


# ------------------------------------------------------------------ corruption domains
@pytest.fixture(scope="module")
def digits_test() -> torch.Tensor:
    return load_data("digits").test.x[:200]


@pytest.fixture(scope="module")
def digits28() -> torch.Tensor:
    """Digits at 28 x 28 (as a cross-domain trial converts them): sizes where every severity is distinct."""
    return load_data("digits", size=28).test.x[:200]


def test_names_parse_canonicalize_and_are_metric_safe():
    assert parse_name("fashion_mnist").corruption is None
    d = parse_name("fashion_mnist:rotate")
    assert (d.dataset, d.corruption, d.severity) == ("fashion_mnist", "rotate", DEFAULT_SEVERITY)
    assert d.canonical == f"fashion_mnist:rotate@{DEFAULT_SEVERITY}"
    assert parse_name("digits:blur@5").canonical == "digits:blur@5"
    assert parse_name("mnist:invert").canonical == "mnist:invert"
    assert xdomain_metric_name("fashion_mnist:rotate@3") == "xdomain_acc_fashion_mnist_rotate_3"
    assert xdomain_metric_name("svhn") == "xdomain_acc_svhn"
    for c in CORRUPTIONS:
        assert MLFLOW_METRIC.match(xdomain_metric_name(f"digits:{c}"))


@pytest.mark.parametrize("bad, says", [
    ("imagenet:rotate@2", "unknown dataset 'imagenet'"),
    ("digits:melt@2", "unknown corruption 'melt'"),
    ("digits:rotate@6", "integer 1..5"),
    ("digits:rotate@0", "integer 1..5"),
    ("digits:rotate@x", "integer 1..5"),
    ("digits:invert@2", "one level"),
    ("digits:rotate:blur", "bad dataset name"),
    ("", "bad dataset name"),
])
def test_bad_names_say_what_is_wrong(bad, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_name(bad)


@pytest.mark.parametrize("corruption", sorted(c for c, v in CORRUPTIONS.items() if v.size is None))
def test_corruption_is_deterministic_changes_images_and_stays_in_range(digits_test, corruption):
    name = f"digits:{corruption}"
    a = corrupt(digits_test, name, seed=7, tag="test")
    b = corrupt(digits_test, name, seed=7, tag="test")
    assert a.shape == digits_test.shape and a.dtype == digits_test.dtype
    assert torch.equal(a, b)
    assert (a - digits_test).abs().mean() > 0.01
    assert a.min() >= 0 and a.max() <= 1


@pytest.mark.parametrize("corruption", ["rotate", "shear", "translate", "gaussian_noise", "impulse_noise"])
def test_random_corruptions_depend_on_seed_and_split(digits_test, corruption):
    name = f"digits:{corruption}@3"
    a = corrupt(digits_test, name, seed=0, tag="test")
    assert not torch.equal(a, corrupt(digits_test, name, seed=1, tag="test"))
    assert not torch.equal(a, corrupt(digits_test, name, seed=0, tag="train"))


@pytest.mark.parametrize("corruption", sorted(c for c, v in CORRUPTIONS.items() if v.has_severity))
def test_higher_severity_changes_images_more(digits28, corruption):
    change = [float((corrupt(digits28, f"digits:{corruption}@{s}") - digits28).abs().mean()) for s in range(1, 6)]
    assert change[4] > change[0] * 1.3, change
    assert sum(b > a for a, b in zip(change, change[1:])) >= 3, change  # monotone-ish


def test_rotation_is_a_real_rotation():
    """A single bright pixel right of centre lands above or below the centre after a ~90 degree turn."""
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 8] = 1.0
    from trainables.core.corruptions import rotate

    y = rotate(x, (90, 90), torch.Generator().manual_seed(0))
    r, c = divmod(int(y[0, 0].argmax()), 9)
    assert c == 4 and r in (0, 8)


def test_corruption_keeps_channels_and_image_means():
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = corrupt(x, "cifar10:contrast@5")
    assert y.shape == x.shape
    # contrast keeps each image's mean
    torch.testing.assert_close(y.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ Circle loss
def test_circle_loss_matches_hand_computed_value():
    # a = (1, 0), b at 60 degrees (s_ab = 0.5, positive), c = (0, 1): s_ac = 0, s_bc = sin 60 (negatives)
    f = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 3.0]])  # c unnormalized on purpose
    y = torch.tensor([0, 0, 1])
    m, gamma = 0.25, 2.0
    # alpha_p = 1 + m - 0.5 = 0.75; logit_p = -2 * 0.75 * (0.5 - 0.75) = 0.375
    # negatives: s = 0: alpha_n = 0.25, logit = 2 * 0.25 * (0 - 0.25) = -0.125
    #            s = sin 60 = 0.8660: alpha_n = 1.1160, logit = 2 * 1.1160 * 0.6160 = 1.37500...
    s = math.sqrt(3) / 2
    logit_n2 = 2 * (s + 0.25) * (s - 0.25)
    assert logit_n2 == pytest.approx(1.375, abs=1e-9)  # (s^2 - m^2) * gamma = (0.75 - 0.0625) * 2
    expected = math.log1p(math.exp(math.log(math.exp(-0.125) + math.exp(1.375)) + 0.375))
    got = circle_loss(f, y, m=m, gamma=gamma)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(CircleLoss(m, gamma)(f, y)) == pytest.approx(expected, rel=1e-5)


def test_circle_loss_is_lower_for_well_separated_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(8)
    separated = torch.eye(16)[y * 4] + 0.01 * torch.randn(32, 16, generator=g)  # one axis per class
    mixed = torch.randn(32, 16, generator=g)
    for gamma in (2.0, 32.0, 256.0):
        assert float(circle_loss(separated, y, gamma=gamma)) < float(circle_loss(mixed, y, gamma=gamma))


def test_circle_loss_without_positive_pairs_is_zero_and_finite():
    f = torch.randn(4, 8, requires_grad=True)
    loss = circle_loss(f, torch.arange(4))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(f.grad).all() and float(f.grad.abs().sum()) == 0.0


def test_circle_loss_default_gamma_is_finite_with_gradients():
    f = torch.randn(64, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2))
    loss = circle_loss(f, y)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(f.grad).all() and float(f.grad.abs().sum()) > 0


def test_circle_loss_rejects_bad_parameters():
    with pytest.raises(ValueError, match="circle_m"):
        CircleLoss(m=1.5)
    with pytest.raises(ValueError, match="circle_gamma"):
        CircleLoss(gamma=0)


# ------------------------------------------------------------------ diagnostics
# 6 samples, 3 classes. Predictions: 0, 1, 1, 2, 0, 2 against labels 0, 0, 1, 2, 2, 1.
SCORES = np.array([
    [3.0, 1.0, 0.0],   # y 0 pred 0  conf high
    [0.5, 1.0, 0.0],   # y 0 pred 1  (0 is 2nd)
    [0.0, 2.0, 1.0],   # y 1 pred 1
    [0.0, 0.0, 4.0],   # y 2 pred 2  most confident
    [1.0, 0.0, 0.9],   # y 2 pred 0  (2 is 2nd)
    [0.0, 0.2, 0.5],   # y 1 pred 2  (1 is 2nd)
])
LABELS = np.array([0, 0, 1, 2, 2, 1])


def test_confusion_per_class_and_macro_scores_by_hand():
    d = dg.diagnose(SCORES, LABELS)
    np.testing.assert_array_equal(d.confusion, [[1, 1, 0], [0, 1, 1], [1, 0, 1]])
    np.testing.assert_allclose(d.per_class_acc, [0.5, 0.5, 0.5])
    assert d.accuracy == pytest.approx(0.5)
    # precision: class 0: 1/2, class 1: 1/2, class 2: 1/2 -> 0.5; recall 0.5; F1 0.5
    assert (d.precision, d.recall, d.f1) == pytest.approx((0.5, 0.5, 0.5))
    assert d.topk == {1: 0.5, 2: 1.0, 3: 1.0, 5: 1.0}


def test_macro_precision_counts_a_never_predicted_class_as_zero():
    p, r, f = dg.macro_prf([0, 1, 2], [0, 1, 1], 3)
    assert p == pytest.approx((1 + 0.5 + 0) / 3)
    assert r == pytest.approx((1 + 1 + 0) / 3)


def test_risk_coverage_aurc_and_selective_accuracy_by_hand():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 0, 1, 0])
    rc = dg.risk_coverage(conf, correct, coverages=(0.8, 0.9, 0.4))
    np.testing.assert_allclose(rc.risk, [0, 0, 1 / 3, 1 / 4, 2 / 5])
    assert rc.aurc == pytest.approx((0 + 0 + 1 / 3 + 1 / 4 + 2 / 5) / 5)
    assert rc.selective_acc[0.8] == pytest.approx(3 / 4)  # ceil(0.8 * 5) = 4 answered
    assert rc.selective_acc[0.9] == pytest.approx(3 / 5)  # ceil(4.5) = 5
    assert rc.selective_acc[0.4] == pytest.approx(1.0)


def test_perfect_ranking_has_lower_aurc_than_reversed():
    correct = np.array([1] * 8 + [0] * 2)
    good = dg.risk_coverage(np.linspace(1, 0.1, 10), correct)
    bad = dg.risk_coverage(np.linspace(0.1, 1, 10), correct)
    assert good.aurc < bad.aurc
    assert good.selective_acc[0.8] == 1.0


def test_diagnostics_ece_reuses_calibration_and_metrics_are_flat_and_safe():
    from analysis.calibration import expected_calibration_error

    d = dg.diagnose(SCORES, LABELS, n_bins=10)
    probs = torch.softmax(torch.tensor(SCORES), 1).numpy()
    ece, _ = expected_calibration_error(probs.max(1), probs.argmax(1) == LABELS, 10)
    assert d.ece == pytest.approx(ece)
    m = d.metrics("test_")
    assert m["test_top2_acc"] == 1.0 and m["test_ece_10bins"] == pytest.approx(ece)
    assert "test_sel_acc_cov80" in m and "test_aurc" in m and "test_class2_acc" in m
    assert all(MLFLOW_METRIC.match(k) for k in m)


def test_diagnostic_plots_write_pngs(tmp_path):
    d = dg.diagnose(SCORES, LABELS)
    assert dg.confusion_plot(d.confusion, tmp_path / "cm.png").stat().st_size > 1000
    assert dg.risk_coverage_plot({"a": d.risk_coverage}, tmp_path / "rc.png").stat().st_size > 1000
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    grid = dg.image_grid({"clean": x, "pgd": 1 - x}, y, {"clean": y, "pgd": torch.zeros(4)}, tmp_path / "g.png")
    assert grid.stat().st_size > 1000
    with pytest.raises(ValueError, match="no predictions"):
        dg.image_grid({"clean": x, "fgsm": x}, y, {"clean": y}, tmp_path / "g2.png")
    xy = np.random.default_rng(0).normal(size=(6, 2))
    assert dg.embedding_plot(xy, LABELS, tmp_path / "u.png", domains=["a"] * 3 + ["b"] * 3).stat().st_size > 1000


# ------------------------------------------------------------------ freezing (pure level)
def _tiny_resnet():
    from trainables.core.trainer import build_model

    torch.manual_seed(0)
    return build_model("resnet18", in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.37,), width=4)


def _sgd_steps(model, frozen, steps=3):
    """SGD steps the way the trainer takes them: its default hooks pick the parameters and the modes."""
    from trainables.core.trainer import all_trainable, frozen_parts_eval

    opt = torch.optim.SGD(all_trainable(model), lr=0.5, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        frozen_parts_eval(model)
        x, y = torch.rand(16, 1, 8, 8, generator=g) * 2, torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_freeze_trunk_keeps_backbone_params_and_bn_buffers_bit_identical():
    from trainables.core.transfer import apply_freeze

    model = _tiny_resnet()
    trunk, head = _state(model.backbone), _state(model.head)
    assert any("running_mean" in k for k in trunk)
    _sgd_steps(model, apply_freeze(model, "trunk"))
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, trunk[k]), k
    assert any(not torch.equal(v, head[k]) for k, v in model.head.state_dict().items())


def test_freeze_all_but_last_block_trains_only_the_last_block_and_head():
    from trainables.core.transfer import apply_freeze, last_block

    model = _tiny_resnet()
    block = last_block(model.backbone)
    assert type(block).__name__ in ("BasicBlock", "Bottleneck")
    block_ids = {id(t) for t in list(block.parameters()) + list(block.buffers())}
    before = {k: v.clone() for k, v in model.backbone.state_dict(keep_vars=True).items()}
    live = model.backbone.state_dict(keep_vars=True)
    _sgd_steps(model, apply_freeze(model, "all_but_last_block"))
    changed_block = frozen_same = 0
    for k, v in before.items():
        now = live[k]
        if id(now) in block_ids:
            changed_block += not torch.equal(now, v)
        else:
            assert torch.equal(now, v), k
            frozen_same += 1
    assert changed_block > 0 and frozen_same > 0


def test_freeze_none_trains_everything_and_unknown_mode_is_an_error():
    from trainables.core.transfer import apply_freeze

    model = _tiny_resnet()
    first = model.backbone[0].weight.clone()
    _sgd_steps(model, apply_freeze(model, "none"))
    assert not torch.equal(model.backbone[0].weight, first)
    with pytest.raises(ValueError, match="choose one of"):
        apply_freeze(model, "everything")


def test_per_class_subset_draws_k_of_each_class_reproducibly():
    from trainables.core.data import Split
    from trainables.core.transfer import per_class_subset

    y = torch.arange(10).repeat(7)
    split = Split(torch.arange(70, dtype=torch.float32).view(70, 1, 1, 1), y)
    a, b = per_class_subset(split, 5, seed=3), per_class_subset(split, 5, seed=3)
    assert torch.equal(a.x, b.x)
    assert torch.bincount(a.y).tolist() == [5] * 10
    assert torch.equal(split.y[a.x.flatten().long()], a.y)  # labels travel with their images
    assert not torch.equal(a.x, per_class_subset(split, 5, seed=4).x)
    with pytest.raises(ValueError, match="fewer than finetune_per_class = 8"):
        per_class_subset(split, 8)


def test_load_weights_roundtrip_and_mismatch(tmp_path):
    from trainables.core.trainer import build_model
    from trainables.core.transfer import load_weights

    src = _tiny_resnet()
    torch.save({"model": src.state_dict(), "epoch": 1}, tmp_path / "ckpt.pt")
    dst = build_model("resnet18", in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.37,), width=4)
    load_weights(dst, tmp_path / "ckpt.pt")
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    wide = build_model("resnet18", in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.37,), width=8)
    with pytest.raises(ValueError, match="does not fit"):
        load_weights(wide, tmp_path / "ckpt.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_weights(wide, tmp_path / "absent.pt")


def test_color_jitter_is_per_sample_seeded_and_rgb_only():
    from trainables.core.jitter import color_jitter

    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = color_jitter(x, 0.4, torch.Generator().manual_seed(1))
    assert torch.equal(a, color_jitter(x, 0.4, torch.Generator().manual_seed(1)))
    assert a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)
    ratio = (a / x.clamp_min(1e-3)).mean((1, 2, 3))
    assert ratio.std() > 0.01  # each sample its own factors
    assert torch.equal(color_jitter(x, 0.0), x)
    gray = x[:, :1].expand(-1, 3, -1, -1)
    g = color_jitter(gray, 0.4, torch.Generator().manual_seed(1))
    assert torch.allclose(g[:, 0], g[:, 1], atol=1e-6)  # a gray image stays gray: saturation has nothing to act on
    with pytest.raises(ValueError, match="RGB"):
        color_jitter(torch.rand(2, 1, 4, 4), 0.2)


def test_load_data_of_a_domain_corrupts_every_split_keeps_labels_and_converts():
    base = load_data("digits", size=16, channels=3)
    dom = load_data("digits:translate", size=16, channels=3)
    again = load_data("digits:translate@3", size=16, channels=3)
    assert dom.info.name == "digits:translate@3" and "generated here" in dom.source
    for split in ("train", "val", "test"):
        a, b, c = getattr(base, split), getattr(dom, split), getattr(again, split)
        assert b.x.shape == a.x.shape == (len(a), 3, 16, 16)
        assert torch.equal(a.y, b.y) and torch.equal(b.x, c.x)
        assert (a.x - b.x).abs().mean() > 0.05
    other_seed = load_data("digits:translate@3", size=16, channels=3, split_seed=1)
    assert not torch.equal(other_seed.test.x, dom.test.x)  # split_seed seeds the domain's draws
