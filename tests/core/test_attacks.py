"""L-inf attacks on a real (small, quickly trained) digits CNN, and the torchattacks cross-check."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from trainables.core import attacks, steps, train
from trainables.core.attacks import (
    eval_mode,
    fgsm,
    pgd,
    pgd_with_kappa,
    prefer,
    random_noise,
    robust_accuracy,
    robust_correct,
)
from trainables.core.metric_names import eps_tag
from trainables.core.steps import attack_step

EPS = 0.1  # moderate on 8x8 digits: a trained CNN is hurt but not destroyed
TOL = 1e-6  # float32 rounding of x +- eps


@pytest.fixture(scope="session")
def trained():
    """A small CNN trained for a few seconds on digits, plus 256 validation samples."""
    r = train({"dataset": "digits", "epochs": 4, "filters": [16, 32], "lr": 0.05, "device": "cpu"})
    from trainables.core.trainer import build_data

    val = build_data(r.config, torch.device("cpu")).val
    r.model.zero_grad(set_to_none=True)  # the last optimizer step's gradients
    return r.model.eval(), val.x[:256], val.y[:256]


ATTACKS = {
    "fgsm": lambda m, x, y, eps: fgsm(m, x, y, eps),
    "fgsm_rs": lambda m, x, y, eps: fgsm(m, x, y, eps, random_start=True),
    "pgd": lambda m, x, y, eps: pgd(m, x, y, eps, steps=5),
    "pgd_start": lambda m, x, y, eps: pgd(m, x, y, eps, steps=0),  # the random start alone
    "pgd_restarts": lambda m, x, y, eps: pgd(m, x, y, eps, steps=3, restarts=2),
    "pgd_targeted": lambda m, x, y, eps: pgd(m, x, y, eps, steps=3, targeted=True, target=(y + 1) % 10),
    "pgd_kappa": lambda m, x, y, eps: pgd_with_kappa(m, x, y, eps, steps=3)[0],
    "noise": lambda m, x, y, eps: random_noise(x, eps),
}


@pytest.mark.parametrize("eps", [0.0, 0.03, 0.3])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_outputs_stay_in_eps_ball_and_image_range(trained, name, eps):
    model, x, y = trained
    x_adv = ATTACKS[name](model, x, y, eps)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= eps + TOL
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if eps > 0 and name not in ("noise", "pgd_start"):
        assert (x_adv - x).abs().max() > 0.5 * eps  # it moved: the bound is not met trivially


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attacks_leave_parameters_and_modes_alone(trained, name):
    model, x, y = trained
    model.train()
    model.backbone[1].eval()  # a mixed state must come back exactly, not as model.train()
    running_mean = model.backbone[1].running_mean.clone()
    try:
        ATTACKS[name](model, x, y, EPS)
        assert model.training and not model.backbone[1].training and model.backbone[5].training
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(model.backbone[1].running_mean, running_mean)
    finally:
        model.eval()
    ATTACKS[name](model, x, y, EPS)
    assert not model.training


def test_attacks_do_not_update_batchnorm_statistics(trained):
    model, x, y = trained
    model.train()
    bn = model.backbone[5]
    before = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    try:
        pgd(model, x, y, EPS, steps=3)
        assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.num_batches_tracked, before[1])
    finally:
        model.eval()


def test_strength_ordering_on_trained_model(trained):
    model, x, y = trained
    clean = robust_accuracy(model, (x, y), None)
    acc = {name: robust_accuracy(model, (x, y), functools.partial(ATTACKS[name], eps=EPS))
           for name in ("fgsm", "pgd", "noise")}
    assert clean > 0.8, clean
    assert acc["pgd"] <= acc["fgsm"] < clean
    assert acc["noise"] > acc["pgd"] + 0.1
    full_pgd = robust_accuracy(model, (x, y), lambda m, a, b: pgd(m, a, b, EPS, steps=10))
    assert full_pgd <= acc["pgd"] + 0.02  # more steps cannot make the attack much weaker


def test_fgsm_matches_a_plain_autograd_reference(trained):
    """The fast path (NHWC weights through functional_call) computes the textbook FGSM."""
    model, x, y = trained
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(xr), y), xr)
    reference = (x + EPS * grad.sign()).clamp(0, 1)
    got = fgsm(model, x, y, EPS)
    assert got.is_contiguous()  # handed back in the caller's layout
    close = (got - reference).abs() < 1e-5
    assert close.float().mean() > 0.999  # a gradient within rounding of 0 may flip sign, nothing more


def test_cpu_attack_path_really_runs_nhwc(trained):
    """With one channel ``contiguous(channels_last)`` is a no-op; the fast path must restride anyway."""
    from trainables.core.attacks import _attack_forward

    model, x, _ = trained
    forward, xf = _attack_forward(model, x)
    assert x.stride()[1] == 64 and xf.stride()[1] == 1  # (N, 1, 8, 8): C stride 64 in NCHW, 1 in NHWC
    assert torch.allclose(forward(xf), model(x), atol=1e-5)


def test_pgd_raises_the_loss_and_targeted_reaches_the_target(trained):
    model, x, y = trained
    with torch.no_grad():
        clean_loss = nn.functional.cross_entropy(model(x), y)
        adv_loss = nn.functional.cross_entropy(model(pgd(model, x, y, EPS, steps=5)), y)
    assert adv_loss > clean_loss + 0.5
    target = (y + 1) % 10
    x_t = pgd(model, x, y, 0.3, steps=10, targeted=True, target=target)
    with torch.no_grad():
        hit = (model(x_t).argmax(1) == target).float().mean()
        base = (model(x).argmax(1) == target).float().mean()
    assert hit > 0.5 > base
    with pytest.raises(ValueError):
        pgd(model, x, y, EPS, targeted=True)


def test_restarts_keep_each_samples_successful_example(trained):
    model, x, y = trained
    # the same seed makes the first restart identical to the single run, so restarts can only add successes
    one = pgd(model, x, y, EPS, steps=2, generator=torch.Generator().manual_seed(3))
    three = pgd(model, x, y, EPS, steps=2, restarts=3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        fooled_one = model(one).argmax(1) != y
        fooled_three = model(three).argmax(1) != y
    assert bool((fooled_three | ~fooled_one).all())  # every sample fooled once is still fooled
    assert fooled_three.sum() >= fooled_one.sum()


def test_restart_preference_puts_success_before_loss():
    success = torch.tensor([True, False, True, False, True])
    score = torch.tensor([0.1, 9.0, 2.0, 1.0, 1.0])
    best_success = torch.tensor([False, True, True, False, True])
    best_score = torch.tensor([5.0, 0.5, 1.0, 2.0, 1.0])
    assert prefer(success, score, best_success, best_score).tolist() == [True, False, True, False, False]


def test_generator_makes_attacks_reproducible(trained):
    model, x, y = trained

    def run(seed):
        return pgd(model, x, y, EPS, steps=2, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    assert torch.equal(random_noise(x, EPS, torch.Generator().manual_seed(0)),
                       random_noise(x, EPS, torch.Generator().manual_seed(0)))


def test_attacks_work_under_inference_mode(trained):
    model, x, y = trained
    expected = robust_accuracy(model, (x, y), lambda m, a, b: pgd(m, a, b, EPS, steps=3,
                                                                 generator=torch.Generator().manual_seed(0)))
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()  # inference tensors: unusable for autograd as they are
        got = robust_accuracy(model, (xi, yi), lambda m, a, b: pgd(m, a, b, EPS, steps=3,
                                                                  generator=torch.Generator().manual_seed(0)))
    assert got == expected < robust_accuracy(model, (x, y), None)


def test_kappa_counts_correctly_classified_iterates(trained):
    model, x, y = trained
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    _, kappa = pgd_with_kappa(model, x, y, 0.0, steps=4, random_start=False)  # never moves
    assert torch.equal(kappa, 4 * correct.long())
    _, kappa = pgd_with_kappa(model, x, y, 0.3, steps=6)
    assert kappa.min() >= 0 and kappa.max() <= 6 and kappa.float().mean() < 6 * correct.float().mean()


def test_robust_accuracy_counts_clean_and_adversarial(trained):
    model, x, y = trained

    class Split:  # anything with .x and .y
        pass

    split = Split()
    split.x, split.y = x, y
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    assert robust_accuracy(model, split, None, batch_size=50) == pytest.approx(clean)
    assert robust_correct(model, (x, y), None) == round(clean * len(y))
    # An "attack" that swaps every image for one the model puts in class c, where c is the label of a
    # misclassified sample: that sample must not count although its "adversarial" prediction is right.
    with torch.no_grad():
        pred = model(x).argmax(1)
    wrong = (pred != y).nonzero()[0, 0]
    c = y[wrong]
    donor = x[((pred == c) & (y == c)).nonzero()[0, 0]]
    expected = ((pred == y) & (y == c)).sum().item() / len(y)
    got = robust_accuracy(model, (x, y), lambda m, a, b: donor.expand_as(a).clone(), batch_size=100)
    assert got == pytest.approx(expected) and got < ((y == c).sum().item() / len(y))


def test_eval_mode_restores_each_module():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    model.train()
    model[1].eval()
    with eval_mode(model):
        assert not model.training and not model[0].training
    assert model.training and model[0].training and not model[1].training


def test_eps_tag():
    assert eps_tag(0.1) == "0.1"
    assert eps_tag(8 / 255) == "0.03137"
    assert eps_tag(0.0) == "0"


def test_default_steps_and_a_given_step():
    assert attack_step("fgsm", 0.1) == 0.1
    assert attack_step("fgsm_rs", 0.1) == pytest.approx(0.125)
    assert attack_step("pgd", 0.1, 5) == pytest.approx(0.05)
    assert attack_step("pgd", 0.1, 5, given=0.02) == 0.02 and attack_step("fgsm_rs", 0.1, given=0.02) == 0.02


def test_one_step_rule_sets_every_attacks_default_step(trained, monkeypatch):
    """Changing ``DEFAULT_STEPS`` changes the step of every attack that takes the default: the attacks
    themselves, the training modes, the robust evaluation and torchattacks' PGD in the independent check."""
    from trainables.core.config import TrainConfig
    from trainables.core.robustness import RobustEval, make_batch_loss
    from trainables.independent_check import _attacks

    model, x, y = trained
    x, y = x[:8], y[:8]
    steps_seen = []
    run = attacks._run

    def spy(model, x, y, eps, steps, step, *args, **kwargs):
        steps_seen.append(step)
        return run(model, x, y, eps, steps, step, *args, **kwargs)

    monkeypatch.setattr(attacks, "_run", spy)
    monkeypatch.setitem(steps.DEFAULT_STEPS, "fgsm", 0.5)
    monkeypatch.setitem(steps.DEFAULT_STEPS, "fgsm_rs", 0.75)
    monkeypatch.setitem(steps.DEFAULT_STEPS, "pgd", 3.0)
    fgsm(model, x, y, 0.1)
    fgsm(model, x, y, 0.1, random_start=True)
    pgd(model, x, y, 0.1, steps=4)
    pgd_with_kappa(model, x, y, 0.1, steps=4)
    assert steps_seen == pytest.approx([0.05, 0.075, 0.075, 0.075])
    for mode, expect in [("fgsm", 0.05), ("fgsm_rs", 0.075), ("pgd", 0.075), ("gairat", 0.075)]:
        steps_seen.clear()
        cfg = TrainConfig.from_dict({"dataset": "digits", "adv_mode": mode, "adv_eps": 0.1,
                                     **({"adv_steps": 4} if mode in ("pgd", "gairat") else {})})
        make_batch_loss(cfg, model, lambda s, t: torch.nn.functional.cross_entropy(s, t, reduction="none"))(x, y, 0)
        assert steps_seen == pytest.approx([expect]), mode
    steps_seen.clear()
    RobustEval((0.1,), 4, 8, 8, 0).measure(model, type("S", (), {"x": x, "y": y}))
    assert sorted({round(s, 9) for s in steps_seen}) == [0.05, 0.075]  # FGSM's and PGD's
    assert _attacks(model, 0.1, 4, False, 10, 0)["pgd_acc"].alpha == pytest.approx(0.075)


# ---------------------------------------------------------------- the torchattacks cross-check
def test_independent_check_agrees_with_our_pgd(trained):
    from trainables.independent_check import gradient_masking_flag, independent_check

    model, x, y = trained
    x, y = x[:128], y[:128]
    model.train()
    try:
        res = independent_check(model, x, y, EPS, steps=10)
        assert model.training
    finally:
        model.eval()
    assert set(res) == {"clean_acc", "pgd_acc", "apgd_acc"}
    assert res["clean_acc"] == pytest.approx(robust_accuracy(model, (x, y), None))
    assert res["pgd_acc"] < res["clean_acc"] and res["apgd_acc"] < res["clean_acc"]
    ours = robust_accuracy(model, (x, y), lambda m, a, b: pgd(m, a, b, EPS, steps=10))
    assert abs(ours - res["pgd_acc"]) <= 0.06  # the same attack, implemented twice
    assert not gradient_masking_flag(ours, min(res["pgd_acc"], res["apgd_acc"]), threshold=0.06)
    assert independent_check(model, x, y, 0.0) == {"clean_acc": res["clean_acc"], "pgd_acc": res["clean_acc"],
                                                   "apgd_acc": res["clean_acc"]}


def test_gradient_masking_flag():
    from trainables.independent_check import gradient_masking_flag

    assert gradient_masking_flag(0.50, 0.47)
    assert not gradient_masking_flag(0.50, 0.48)  # exactly 2 points: not more than the threshold
    assert not gradient_masking_flag(0.50, 0.49)
    assert not gradient_masking_flag(0.30, 0.50)  # the independent attack being weaker is no masking
    assert gradient_masking_flag(0.50, 0.45, threshold=0.04)
    assert not gradient_masking_flag(0.50, 0.45, threshold=0.05)
