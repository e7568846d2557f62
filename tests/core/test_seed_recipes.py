"""Options that make each seed's recipe trainable as printed (issue 19): each one shown to act."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainables.core import ConfigError, TrainConfig
from trainables.core.data import THESIS_AFFINE, DataSpec, random_affine
from trainables.core.domain_names import dataset_info
from trainables.core.gaussian_head import GaussianHead, covariance_loss, kurtosis, kurtosis_term
from trainables.core.registry import build
from trainables.core.robustness import FGSM_LOSSES, RobustEval, make_batch_loss
from trainables.core.trainer import Trainer, network_for
from trainables.families import trial_config

REGNET = {"head": "gaussian", "loss": "none", "mu_t": 10.0, "optimizer": "adam", "lr": 0.003, "weight_decay": 0.0}


# ---------------------------------------------------------------- RegNet (seed 002)
def test_latent_is_float32_under_cpu_autocast_and_the_loss_does_not_move():
    """Latents near their targets at mu_T 300 (a trained model's): a bf16 z (steps of 2 near 300) would move the
    covariance loss by far more than 1e-5 (issue 19 measured 20.48 -> 22.99 on CUDA)."""
    g = torch.Generator().manual_seed(0)
    head = GaussianHead(10, 10, mu_t=300.0)
    with torch.no_grad():
        head.linear.weight.copy_(torch.eye(10))
        head.linear.bias.zero_()
    y = torch.arange(10).repeat(20)
    f = 300.0 * F.one_hot(y, 10).float() + torch.randn(200, 10, generator=g)
    z32 = head.latent(f)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = head.latent(f)
        loss, scores = head.objective(z, y), head.scores(z)
    assert z.dtype == torch.float32
    ref = head.objective(z32, y)
    assert 0 < ref.item() < 100  # near the targets: the regime where bf16 rounding would dominate the loss
    assert abs(loss.item() - ref.item()) <= 1e-5 * abs(ref.item())
    assert torch.allclose(scores, head.scores(z32), rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("per_class", [6, 20])
def test_unbiased_kurtosis_is_three_on_gaussian_samples(per_class):
    g = torch.Generator().manual_seed(per_class)
    y = torch.arange(10).repeat_interleave(per_class)
    found = {"population": [], "unbiased": []}
    for _ in range(300):
        z = torch.randn(len(y), 10, generator=g, dtype=torch.float64) * 2.5 + 40
        for est in found:
            found[est].append(kurtosis(z, y, estimator=est).mean())
    unbiased = torch.stack(found["unbiased"]).mean().item()
    population = torch.stack(found["population"]).mean().item()
    assert unbiased == pytest.approx(3.0, abs=0.03)
    assert population == pytest.approx(3 * (per_class - 1) / (per_class + 1), abs=0.03)  # E[b2], biased low


def test_unbiased_kurtosis_needs_four_samples_and_the_head_uses_the_configured_estimator(tiny):
    z = torch.tensor([[0.0, 1.0], [1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [0.5, 2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1])
    assert kurtosis_term(z, y, 1.0, "abs", 2, "unbiased") == 0  # 3 and 2 samples: no class has enough
    assert kurtosis_term(z, y, 1.0, "abs", 2, "population") > 0
    cfg = TrainConfig.from_dict({**tiny, **REGNET, "kurtosis_estimator": "unbiased"})
    head = build("head", "gaussian", cfg, 16, 10)
    z = torch.randn(60, 10)
    y = torch.arange(10).repeat(6)
    assert head.kurtosis(z, y).item() == pytest.approx(kurtosis_term(z, y, 1.0, "linear", 10, "unbiased").item(),
                                                       rel=1e-6)
    assert head.kurtosis(z, y).item() != pytest.approx(kurtosis_term(z, y, 1.0, "linear", 10).item(), rel=1e-3)
    with pytest.raises(ConfigError, match="kurtosis_estimator"):
        TrainConfig.from_dict({**tiny, "kurtosis_estimator": "unbiased"})  # linear head: it would do nothing


def _regnet_model(tiny, **extra):
    cfg = TrainConfig.from_dict({**tiny, **REGNET, "kurtosis_factor": 0.5, "kurtosis_penalty": "abs", **extra})
    torch.manual_seed(0)
    return cfg, network_for(cfg, dataset_info("digits"), 1, 8).eval()


def test_fgsm_on_the_training_loss_equals_the_hand_computation(tiny):
    cfg, model = _regnet_model(tiny)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 1, 8, 8, generator=g)
    y = torch.arange(10).repeat(4)
    eps = 0.1
    xg = x.clone().requires_grad_(True)
    z = model.outputs(xg).latent
    total = covariance_loss(z, y, cfg.mu_t, cfg.sigma_t, 10) + 0.5 * kurtosis_term(z, y, 1.0, "abs", 10)
    (grad,) = torch.autograd.grad(total, xg)
    hand = (x + eps * grad.sign()).clamp(0, 1)
    found = FGSM_LOSSES["training"](model, x, y, eps)
    assert torch.allclose(found, hand, atol=1e-6)
    ce = FGSM_LOSSES["ce"](model, x, y, eps)
    assert not torch.allclose(found, ce)  # a different attack than the cross-entropy one


def test_fgsm_loss_reaches_the_robust_evaluation_and_is_the_regnet_familys_default(tiny, monkeypatch):
    cfg, model = _regnet_model(tiny)
    split = type("S", (), {"x": torch.rand(60, 1, 8, 8), "y": torch.arange(10).repeat(6)})()
    monkeypatch.setitem(FGSM_LOSSES, "margin", lambda m, x, y, eps: x)  # an attack that changes nothing
    same = RobustEval((0.3,), 3, 60, 64, 0, None, "margin").measure(model, split)
    assert same["fgsm_acc_eps0.3"] == same["clean_acc"] > 0
    monkeypatch.setitem(FGSM_LOSSES, "margin", lambda m, x, y, eps: torch.full_like(x, 0.5))  # erases the images
    with torch.no_grad():
        gray = (model(torch.full_like(split.x, 0.5)).argmax(1) == split.y).float().mean().item()
    assert RobustEval((0.3,), 3, 60, 64, 0, None, "margin").measure(model, split)["fgsm_plain_acc_eps0.3"] == \
        pytest.approx(gray)
    assert trial_config({"head": "gaussian", "eval_eps": [0.1]})["fgsm_loss"] == "training"
    assert trial_config({"head": "gaussian", "eval_eps": [0.1], "fgsm_loss": "margin"})["fgsm_loss"] == "margin"
    assert "fgsm_loss" not in trial_config({"head": "gaussian"})  # no robust evaluation: it would not act
    assert TrainConfig.from_dict({**tiny}).fgsm_loss == "ce"  # other families: the cross-entropy, as before
    with pytest.raises(ConfigError, match="fgsm_loss"):
        TrainConfig.from_dict({**tiny, "fgsm_loss": "margin"})  # no eval_eps


def test_thesis_affine_augmentation_is_its_own_choice(tiny):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    out = random_affine(x, **THESIS_AFFINE, generator=g)
    assert out.shape == x.shape and not torch.allclose(out, x)
    assert len({round(v, 3) for v in out.sum((1, 2, 3)).tolist()}) > 8  # per-sample transforms
    assert torch.allclose(random_affine(x, degrees=0, shear=0, shift=0, zoom=1.0), x, atol=1e-5)
    moved = random_affine(x, degrees=0, shear=0, shift=0.2, zoom=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(moved.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.02)  # a shift keeps the blob
    trainer = Trainer({**tiny, "augment": "affine", "epochs": 1})
    assert trainer.augment is not None
    with pytest.raises(ConfigError, match="crop_padding"):
        TrainConfig.from_dict({**tiny, "augment": "affine", "crop_padding": 2})
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig.from_dict({**tiny, "augment": "rotate"})


# ---------------------------------------------------------------- generalization (seeds 000/001)
def test_label_smoothing_to_others_is_the_seeds_eq_3(tiny):
    torch.manual_seed(0)
    scores, y, eps, k = torch.randn(7, 5), torch.tensor([0, 1, 2, 3, 4, 0, 2]), 0.2, 5
    onehot = F.one_hot(y, k).float()
    q_others = (1 - eps) * onehot + eps / (k - 1) * (1 - onehot)  # eq. 3
    q_all = (1 - eps) * onehot + eps / k
    logp = scores.log_softmax(1)
    others = TrainConfig.from_dict({**tiny, "loss": "label_smoothing", "label_smoothing": eps,
                                    "label_smoothing_to": "others"})
    default = TrainConfig.from_dict({**tiny, "loss": "label_smoothing", "label_smoothing": eps})
    assert torch.allclose(build("loss", "label_smoothing", others)(scores, y), -(q_others * logp).sum(1), atol=1e-6)
    assert torch.allclose(build("loss", "label_smoothing", default)(scores, y), -(q_all * logp).sum(1), atol=1e-6)
    zero = others.with_overrides(label_smoothing=0.0)
    assert torch.allclose(build("loss", "label_smoothing", zero)(scores, y), F.cross_entropy(scores, y, reduction="none"),
                          atol=1e-6)
    with pytest.raises(ConfigError, match="label_smoothing_to"):
        TrainConfig.from_dict({**tiny, "label_smoothing_to": "others"})  # cross-entropy: it would do nothing


def test_pixel_amounts_written_as_fractions(tiny):
    cfg = TrainConfig.from_dict({**tiny, "eval_eps": ["8/255", 0.1], "eval_pgd_step_size": "2/255"})
    assert cfg.eval_eps == (8 / 255, 0.1) and cfg.eval_pgd_step_size == pytest.approx(2 / 255)
    with pytest.raises(ConfigError, match="eval_pgd_step_size"):
        TrainConfig.from_dict({**tiny, "eval_eps": [0.1], "eval_pgd_step_size": "2/0"})


# ---------------------------------------------------------------- adversarial training (seed 004)
@pytest.mark.parametrize("adv_mode", ["pgd", "gairat"])
def test_pgd_start_input_starts_at_x(tiny, adv_mode):
    base = {**tiny, "adv_mode": adv_mode, "adv_eps": 0.1, "adv_steps": 1, "adv_step_size": 0.05}
    if adv_mode == "gairat":
        base["gairat_burn_in"] = 1  # epoch 0 unweighted: the loss is the plain mean on the crafted images
    cfg_input = TrainConfig.from_dict({**base, "pgd_start": "input"})
    torch.manual_seed(0)
    model = network_for(cfg_input, dataset_info("digits"), 1, 8).eval()
    x, y = torch.rand(32, 1, 8, 8), torch.arange(32) % 10
    loss_fn = lambda s, t: F.cross_entropy(s, t, reduction="none")  # noqa: E731
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    hand = (x + 0.05 * grad.sign()).clamp(0, 1)  # one step from x itself
    expected = loss_fn(model(hand), y).mean()
    loss, _ = make_batch_loss(cfg_input, model, loss_fn, torch.Generator().manual_seed(0))(x, y, 0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    random = TrainConfig.from_dict(base)
    assert random.pgd_start == "random"  # the default: the official code's random start
    loss_r, _ = make_batch_loss(random, model, loss_fn, torch.Generator().manual_seed(0))(x, y, 0)
    assert loss_r.item() != pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="pgd_start"):
        TrainConfig.from_dict({**tiny, "pgd_start": "input"})  # no adversary: it would do nothing


# ---------------------------------------------------------------- optimization (seed 003)
def _lrs(cfg, losses):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched, _ = build("scheduler", cfg.scheduler, cfg, opt, 10, 1)
    out = []
    for v in losses:
        sched.step(v)
        out.append(round(opt.param_groups[0]["lr"], 6))
    return out


def test_plateau_threshold_and_cooldown_act(tiny):
    plateau = {**tiny, "scheduler": "plateau", "plateau_patience": 0, "plateau_factor": 0.5}
    seed = TrainConfig.from_dict(plateau)
    assert (seed.plateau_threshold, seed.plateau_cooldown) == (1e-3, 2)
    flat = [1.0] * 6
    assert _lrs(seed, flat) == [1.0, 0.5, 0.5, 0.5, 0.25, 0.25]  # two epochs of cooldown after each drop
    assert _lrs(TrainConfig.from_dict({**plateau, "plateau_cooldown": 0}), flat) == [1.0, 0.5, 0.25, 0.125,
                                                                                     0.0625, 0.03125]
    slow = [1.0, 0.9995, 0.999]  # improvements of 0.05 %: not enough under a relative threshold of 0.1 %
    assert _lrs(seed, slow)[1] == 0.5
    assert _lrs(TrainConfig.from_dict({**plateau, "plateau_threshold": 1e-4}), slow)[1] == 1.0


def test_step_schedule_default_period_is_the_seeds_20_epochs(tiny):
    cfg = TrainConfig.from_dict({**tiny, "scheduler": "step"})
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched, _ = build("scheduler", "step", cfg, opt, 40, 1)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[19] == 1.0 and math.isclose(lrs[20], cfg.gamma)


def test_targets_normalized_with_their_own_statistics(tiny):
    from trainables.core.crossdomain import CrossDomainEval, accuracy, own_stats
    from trainables.core.data import Split

    cfg = TrainConfig.from_dict(tiny)
    model = network_for(cfg, dataset_info("digits"), 1, 8).eval()
    seen = []
    model.backbone.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    x, y = torch.rand(12, 1, 8, 8), torch.arange(12) % 10
    stats = (torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 0.2))
    accuracy(model, Split(x, y), own_stats=stats)
    assert torch.allclose(seen[-1], (x - 0.5) / 0.2, atol=1e-5)  # the target's own standardization
    accuracy(model, Split(x, y))
    assert torch.allclose(seen[-1], (x - model.mean) / model.std, atol=1e-6)  # the source's (default)
    mean, std = own_stats("svhn", 3, "cpu")
    assert mean.flatten().tolist() == pytest.approx([0.4377, 0.4438, 0.4728])
    own = CrossDomainEval(DataSpec("digits"), ["digits:invert"], channels=1, size=8, normalize="own")
    plain = CrossDomainEval(DataSpec("digits"), ["digits:invert"], channels=1, size=8)
    assert own.stats[0] is not None and plain.stats == [None]
    with pytest.raises(ConfigError, match="xdomain_normalize"):
        TrainConfig.from_dict({**tiny, "xdomain_normalize": "own"})  # no eval_datasets: it would do nothing


def test_seed_003s_three_stage_resnet():
    from trainables.core.models import build_network

    cfg = TrainConfig.from_dict({"model": "resnet_3stage", "width": 8, "optimizer": "adamw", "device": "cpu"})
    net = build_network(cfg, in_channels=3, num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert net.backbone.out_features == 32  # 4 x width: three stages
    stages = [m for m in net.backbone.modules() if m.__class__.__name__ == "BasicBlock"]
    assert len(stages) == 6 and [b.conv1.stride[0] for b in stages] == [1, 1, 2, 1, 2, 1]
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="stem"):
        TrainConfig.from_dict({"model": "resnet_3stage", "stem": "imagenet"})  # the seed's 3x3 stem only


def test_imagenet_resnet34_weights_load_in_order(tmp_path, monkeypatch):
    """Seed 004's dataset-specific method fine-tunes torchvision's ImageNet ResNet-34."""
    from trainables.core import pretrained
    from trainables.core.torchvision_compat import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet34().eval()  # random weights standing in for ImageNet's
    path = pretrained.cache_path("resnet34")
    assert path != pretrained.cache_path("resnet18") and str(path).startswith(str(tmp_path))
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    cfg = TrainConfig.from_dict({"dataset": "cifar10", "model": "resnet34", "stem": "imagenet",
                                 "pretrained": "imagenet", "device": "cpu"})
    model = network_for(cfg, dataset_info("cifar10"), 3, 32).eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(pretrained.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(pretrained.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        r = reference
        theirs = r.avgpool(r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1((x - mean) / std)))))))))
        torch.testing.assert_close(model.features(x), torch.flatten(theirs, 1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="resnet50"):
        TrainConfig.from_dict({"model": "resnet50", "stem": "imagenet", "pretrained": "imagenet", "channels": 3})


# ---------------------------------------------------------------- BatchNorm analysis (seed 003, Santurkar et al.)
def test_landscape_probe_measures_along_the_gradient_and_leaves_the_model_as_it_was(tiny):
    from trainables.core.landscape import probe
    from trainables.core.metric_names import LANDSCAPE_METRICS
    from trainables.families import FAMILIES

    cfg = TrainConfig.from_dict({**tiny, "landscape_probe": True})
    torch.manual_seed(0)
    model = network_for(cfg, dataset_info("digits"), 1, 8).train()
    x, y = torch.rand(64, 1, 8, 8), torch.arange(64) % 10
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = lambda s, t: F.cross_entropy(s, t, reduction="none")  # noqa: E731
    found = probe(model, loss_fn, x, y, lr=0.5, multiples=(1.0, 3.0))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # weights and BN statistics

    def at(step):  # an independent computation: a copy of the model moved along -g by hand
        m = network_for(cfg, dataset_info("digits"), 1, 8)
        m.load_state_dict(before)
        m.train()
        loss = loss_fn(m(x), y).mean()
        grads = torch.autograd.grad(loss, list(m.parameters()))
        return m, grads

    m0, g0 = at(0)
    losses, changes = [], []
    for mult in (1.0, 3.0):
        m, _ = at(0)
        with torch.no_grad():
            for p, g in zip(m.parameters(), g0):
                p -= mult * 0.5 * g
        loss = loss_fn(m(x), y).mean()
        g1 = torch.autograd.grad(loss, list(m.parameters()))
        losses.append(loss.item())
        changes.append(torch.cat([(a - b).flatten() for a, b in zip(g1, g0)]).norm().item())
    assert found["landscape_loss_range"] == pytest.approx(max(losses) - min(losses), rel=1e-4, abs=1e-6)
    assert found["landscape_grad_change"] == pytest.approx(max(changes), rel=1e-4)
    trainer = Trainer({**tiny, "landscape_probe": True, "epochs": 1})
    trainer.fit()
    assert set(LANDSCAPE_METRICS) <= set(trainer.history[-1])
    assert set(LANDSCAPE_METRICS) <= set(FAMILIES["optimization"].metrics({"landscape_probe": True}))
    assert not set(LANDSCAPE_METRICS) & set(FAMILIES["optimization"].metrics({}))
