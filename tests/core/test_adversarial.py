"""Adversarial training modes (FGSM-RS, PGD-AT, GAIRAT) and the per-epoch robust metrics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.core import TrainConfig, train
from trainables.core.attacks import fgsm, pgd
from trainables.core.registry import build
from trainables.core.robustness import RobustEval, gairat_weights, make_batch_loss, robust_metrics

TINY = {"dataset": "digits", "filters": [8, 16], "max_train_samples": 256, "device": "cpu",
        "batch_size": 64, "lr": 0.05}


def omega(kappa, steps, lam):
    return (1 + math.tanh(lam + 5 * (1 - 2 * kappa / steps))) / 2


# ---------------------------------------------------------------- GAIRAT weights
def test_gairat_weights_follow_the_formula():
    kappa = torch.tensor([0, 5, 10, 3])
    raw = gairat_weights(kappa, 10, 0.0, normalize=False)
    expected = [(1 + math.tanh(5)) / 2, 0.5, (1 + math.tanh(-5)) / 2, (1 + math.tanh(2)) / 2]
    assert raw.tolist() == pytest.approx(expected, rel=1e-6)
    assert gairat_weights(torch.tensor([5]), 10, -1.0, normalize=False).item() == pytest.approx(
        (1 + math.tanh(-1)) / 2, rel=1e-6)
    # lambda shifts the curve: a smaller lambda favours boundary examples even more
    assert gairat_weights(torch.tensor([7]), 10, -2.0, normalize=False) < gairat_weights(
        torch.tensor([7]), 10, 0.0, normalize=False)


def test_gairat_weights_normalize_to_mean_one():
    kappa = torch.tensor([0, 2, 5, 9, 10])
    w = gairat_weights(kappa, 10, -1.0)
    raw = [omega(k, 10, -1.0) for k in kappa.tolist()]
    assert w.sum().item() == pytest.approx(len(kappa), rel=1e-6)
    assert w.tolist() == pytest.approx([r * len(raw) / sum(raw) for r in raw], rel=1e-6)
    assert bool((w[:-1] > w[1:]).all())  # fewer steps to flip -> closer to the boundary -> more weight
    assert gairat_weights(torch.full((4,), 3), 10, 0.0).tolist() == pytest.approx([1.0] * 4)


# ---------------------------------------------------------------- batch losses
@pytest.fixture(scope="module")
def tiny():
    """An untrained tiny CNN on digits (8x8) and one batch."""
    from trainables.core.trainer import build_data, build_network

    cfg = TrainConfig.from_dict(TINY)
    data = build_data(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    return build_network(cfg, data), data.train.x[:32], data.train.y[:32]


def _loss(cfg_overrides, model, x, y, epoch=0, seed=0):
    cfg = TrainConfig.from_dict(TINY, **cfg_overrides)
    batch_loss = make_batch_loss(cfg, model, build("loss", "cross_entropy", cfg),
                                 generator=torch.Generator().manual_seed(seed))
    loss, out = batch_loss(x, y, epoch)
    return loss, out.scores


@pytest.mark.parametrize("mode", ["none", "fgsm_rs", "pgd", "gairat"])
def test_batch_loss_trains_on_adversarial_examples(tiny, mode):
    model, x, y = tiny
    model.train()
    loss, logits = _loss({"adv_mode": mode, "adv_eps": 0.1, **({"adv_steps": 3} if mode != "fgsm_rs" else {})}
                         if mode != "none" else {}, model, x, y)
    assert model.training  # the attack's eval mode was undone before the training forward
    assert loss.dim() == 0 and loss.requires_grad and logits.shape == (32, 10)
    assert all(p.grad is None for p in model.parameters())  # crafting the examples left no gradient
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    if mode != "none":
        clean_loss, _ = _loss({}, model, x, y)
        assert loss > clean_loss  # trained on harder inputs


def test_pgd_at_loss_is_the_loss_on_the_pgd_examples(tiny):
    model, x, y = tiny
    model.eval()  # eval mode makes the training forward deterministic and per-sample
    loss, _ = _loss({"adv_mode": "pgd", "adv_eps": 0.1, "adv_steps": 3}, model, x, y, seed=5)
    x_adv = pgd(model, x, y, 0.1, steps=3, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(x_adv), y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_fgsm_rs_uses_wong_step_and_beta_mixes_clean_loss(tiny):
    model, x, y = tiny
    model.eval()
    adv, _ = _loss({"adv_mode": "fgsm_rs", "adv_eps": 0.1}, model, x, y, seed=1)
    x_adv = fgsm(model, x, y, 0.1, random_start=True, step_size=0.125, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert adv.item() == pytest.approx(nn.functional.cross_entropy(model(x_adv), y).item(), rel=1e-5)
    clean, _ = _loss({}, model, x, y)
    mixed, logits = _loss({"adv_mode": "fgsm_rs", "adv_eps": 0.1, "adv_beta": 0.25}, model, x, y, seed=1)
    assert mixed.item() == pytest.approx(0.25 * adv.item() + 0.75 * clean.item(), rel=1e-5)
    assert logits.shape == (32, 10)


def test_gairat_reweights_after_burn_in(tiny):
    model, x, y = tiny
    model.eval()
    cfg = {"adv_mode": "gairat", "adv_eps": 0.3, "adv_steps": 4, "gairat_burn_in": 2, "gairat_lambda": 0.0}
    burn_in, _ = _loss(cfg, model, x, y, epoch=1, seed=2)
    plain, _ = _loss({"adv_mode": "pgd", "adv_eps": 0.3, "adv_steps": 4}, model, x, y, seed=2)
    assert burn_in.item() == pytest.approx(plain.item(), rel=1e-6)

    from trainables.core.attacks import pgd_with_kappa

    x_adv, kappa = pgd_with_kappa(model, x, y, 0.3, steps=4, generator=torch.Generator().manual_seed(2))
    assert len(kappa.unique()) > 1  # otherwise the weights would all be 1 and the check below vacuous
    with torch.no_grad():
        per_sample = nn.functional.cross_entropy(model(x_adv), y, reduction="none")
    expected = (per_sample * gairat_weights(kappa, 4, 0.0)).mean()
    weighted, _ = _loss(cfg, model, x, y, epoch=2, seed=2)
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-3)


# ---------------------------------------------------------------- through train()
@pytest.mark.parametrize("mode,extra", [("fgsm_rs", {}), ("pgd", {"adv_steps": 3}),
                                        ("gairat", {"adv_steps": 3, "gairat_burn_in": 1})])
def test_adversarial_training_runs_and_reports_robust_metrics(mode, extra):
    r = train({**TINY, "epochs": 2, "adv_mode": mode, "adv_eps": 0.1, "eval_eps": [0.0, 0.1], "eval_samples": 64,
               "eval_pgd_steps": 3, **extra})
    assert len(r.history) == 2
    for m in r.history:
        names = RobustEval.metric_names([0.0, 0.1])
        assert set(names) <= set(m)
        assert all(0.0 <= m[k] <= 1.0 for k in names)
        assert m["fgsm_acc_eps0"] == m["pgd_acc_eps0"] == m["noise_acc_eps0"] == m["clean_acc"]
        assert m["pgd_acc_eps0.1"] <= m["clean_acc"]
    assert math.isfinite(r.final["train_loss"]) and r.final["clean_acc"] > 0.2  # it learned something


def test_robust_metrics_on_a_trained_model():
    r = train({**TINY, "max_train_samples": None, "epochs": 3, "filters": [16, 32]})
    from trainables.core.trainer import build_data

    val = build_data(r.config, torch.device("cpu")).val
    cfg = r.config.model_copy(update={"eval_eps": (0.0, 0.1), "eval_samples": 200, "eval_pgd_steps": 10})
    assert not r.model.training  # train() hands the model back ready to predict
    r.model.train()
    m = robust_metrics(r.model, val, cfg)
    assert r.model.training  # the metrics ran it in eval mode and restored the caller's mode
    r.model.eval()
    assert set(m) == set(RobustEval.metric_names([0.0, 0.1]))
    with torch.no_grad():
        assert m["clean_acc"] == pytest.approx((r.model(val.x[:200]).argmax(1) == val.y[:200]).float().mean().item())
    assert m["pgd_acc_eps0.1"] <= m["fgsm_acc_eps0.1"] < m["clean_acc"]
    assert m["noise_acc_eps0.1"] > m["pgd_acc_eps0.1"]
    assert robust_metrics(r.model, val, cfg) == m  # seeded: reproducible


def test_pgd_at_resumes_exactly_from_a_checkpoint(tmp_path):
    """Random starts come from the RNG the trainer checkpoints, so a resumed run matches an uninterrupted one."""
    from trainables.core.trainer import Trainer

    cfg = {**TINY, "epochs": 2, "adv_mode": "pgd", "adv_eps": 0.1, "adv_steps": 3, "eval_eps": [0.1], "eval_samples": 64,
           "eval_pgd_steps": 3}
    full = train(cfg)
    ckpt = tmp_path / "epoch1.pt"
    Trainer(cfg).fit(on_epoch=lambda m, trainer: trainer.save_checkpoint(ckpt) is not None)  # stop after epoch 1
    resumed = train(cfg, resume_from=ckpt)
    for key in ("train_loss", "val_loss", "pgd_acc_eps0.1"):
        assert resumed.history[-1][key] == full.history[-1][key]


@pytest.mark.parametrize("eps", [0.0, 8 / 255, 0.1, 0.3, 1.0, 1e-5])
def test_parse_metric_name_reads_back_every_name_the_formatter_writes(eps):
    from trainables.core.metric_names import ATTACK_METRICS, parse_metric_name, robust_metric_name

    for attack in ATTACK_METRICS:
        attack_back, eps_back = parse_metric_name(robust_metric_name(attack, eps))
        assert attack_back == attack and robust_metric_name(attack, eps_back) == robust_metric_name(attack, eps)
    for other in ("clean_acc", "val_acc", "xdomain_acc_svhn", "cw_acc_eps0.1", "pgd_acc_eps", "pgd_acc_epsx",
                  "indep_pgd_acc", "pgd_acc_eps0.10"):
        assert parse_metric_name(other) is None
