"""RegNet math (issue 10 acceptance): the losses are the KL they claim to be, numerics survive tiny classes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from trainables.core.data import class_subset_map, select_classes
from trainables.core.gaussian_head import (
    GaussianHead,
    balanced_batches,
    class_covariances,
    class_moments,
    covariance_loss,
    gaussianity_metrics,
    hist_rmse,
    kurtosis,
    kurtosis_term,
    simplified_loss,
    target_means,
)
from trainables.core.shakeshake import shake_mix, shakeshake26_2x96d


def _targets(n_per_class, d, mu_t, sigma_t, gen):
    y = torch.arange(d).repeat_interleave(n_per_class)
    z = target_means(d, mu_t, dtype=torch.float64)[y] + sigma_t * torch.randn(len(y), d, generator=gen, dtype=torch.float64)
    return z, y


@pytest.mark.parametrize("seed", range(5))
def test_covariance_loss_is_kl_of_the_two_gaussians(seed):
    gen = torch.Generator().manual_seed(seed)
    d = 2 + seed  # 2..6
    mu_t, sigma_t = float(torch.empty(1).uniform_(1, 50, generator=gen)), float(torch.empty(1).uniform_(0.3, 3, generator=gen))
    n = 40
    y = torch.randint(0, d, (n * d,), generator=gen)
    mix = torch.randn(d, d, generator=gen, dtype=torch.float64)  # correlated, non-diagonal Sigma_O
    offsets = 3 * torch.randn(d, d, generator=gen, dtype=torch.float64)
    z = torch.randn(len(y), d, generator=gen, dtype=torch.float64) @ mix + offsets[y]
    expected = 0.0
    for c in range(d):
        zc = z[y == c]
        if len(zc) < 2:
            continue
        p = MultivariateNormal(zc.mean(0), covariance_matrix=torch.cov(zc.T))
        q = MultivariateNormal(target_means(d, mu_t, dtype=torch.float64)[c],
                               covariance_matrix=sigma_t**2 * torch.eye(d, dtype=torch.float64))
        expected += float(kl_divergence(p, q))
    got = covariance_loss(z, y, mu_t, sigma_t, d, jitter=0.0)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    # the default jitter is a negligible change
    assert float(covariance_loss(z, y, mu_t, sigma_t, d)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("mu_t,sigma_t", [(10.0, 1.0), (70.0, 2.0)])
def test_losses_near_zero_for_samples_from_the_targets(mu_t, sigma_t):
    gen = torch.Generator().manual_seed(0)
    z, y = _targets(20000, 4, mu_t, sigma_t, gen)
    assert abs(float(covariance_loss(z, y, mu_t, sigma_t, 4))) < 0.01
    assert abs(float(simplified_loss(z, y, mu_t, sigma_t, 4))) < 0.01
    # and clearly positive when the means are off by one sigma
    shifted = z + sigma_t * torch.nn.functional.one_hot(y, 4).double()
    assert float(covariance_loss(shifted, y, mu_t, sigma_t, 4)) == pytest.approx(4 * 0.5, abs=0.05)


def test_simplified_equals_covariance_when_sigma_o_is_diagonal():
    gen = torch.Generator().manual_seed(1)
    d, mu_t = 3, 12.0
    # per class: 4 points +-a_j on each axis j -> the sample covariance is exactly diagonal
    rows = []
    for c in range(d):
        scale = torch.rand(d, generator=gen, dtype=torch.float64) + 0.5
        pts = torch.cat([torch.diag(scale), -torch.diag(scale)])
        rows.append(pts + torch.randn(d, generator=gen, dtype=torch.float64) + target_means(d, mu_t, torch.float64)[c])
    z = torch.cat(rows)
    y = torch.arange(d).repeat_interleave(2 * d)
    _, _, cov = class_covariances(z, y, d)
    off = cov - torch.diag_embed(torch.diagonal(cov, dim1=1, dim2=2))
    assert off.abs().max() < 1e-12
    assert float(simplified_loss(z, y, mu_t, 1.5, d)) == pytest.approx(float(covariance_loss(z, y, mu_t, 1.5, d)), rel=1e-10)
    # and they differ once Sigma_O is correlated
    zc = z.clone()
    zc[:, 1] += zc[:, 0]
    assert float(simplified_loss(zc, y, mu_t, 1.5, d)) != pytest.approx(float(covariance_loss(zc, y, mu_t, 1.5, d)), rel=1e-3)


def test_kurtosis_of_gaussian_samples_is_three_and_of_uniform_is_1_8():
    gen = torch.Generator().manual_seed(2)
    z, y = _targets(50000, 3, 10.0, 1.0, gen)
    assert kurtosis(z, y) == pytest.approx(torch.full((3,), 3.0, dtype=torch.float64), abs=0.06)
    u = torch.rand(len(y), 3, generator=gen, dtype=torch.float64)
    assert kurtosis(u, y) == pytest.approx(torch.full((3,), 1.8, dtype=torch.float64), abs=0.03)
    m = class_moments(z, y, 3)
    assert m["skewness"].abs().max() < 0.05
    assert m["std"] == pytest.approx(torch.ones(3, 3, dtype=torch.float64), abs=0.02)


def test_kurtosis_penalties():
    gen = torch.Generator().manual_seed(3)
    u = torch.rand(3000, 2, generator=gen, dtype=torch.float64)  # K ~ 1.8 per class
    y = torch.arange(2).repeat(1500)
    k = kurtosis(u, y)
    assert float(kurtosis_term(u, y, 0.5, "linear")) == pytest.approx(0.5 * float((k - 3).sum()))
    assert float(kurtosis_term(u, y, 0.5, "abs")) == pytest.approx(0.5 * float((k - 3).abs().sum()))
    assert float(kurtosis_term(u, y, 0.5, "square")) == pytest.approx(0.5 * float((k - 3).pow(2).sum()))
    assert float(kurtosis_term(u, y, 0.5, "linear")) < 0 < float(kurtosis_term(u, y, 0.5, "abs"))
    with pytest.raises(ValueError, match="kurtosis_penalty"):
        kurtosis_term(u, y, 1.0, "cubic")


def test_nearest_mean_prediction_on_hand_made_points():
    head = GaussianHead(in_features=3, d=3, mu_t=10.0, sigma_t=1.0)
    with torch.no_grad():
        head.linear.weight.copy_(torch.eye(3))
        head.linear.bias.zero_()
    pts = torch.tensor([[9.0, 0.5, -1.0], [4.0, 6.0, 0.0], [0.0, 0.0, 5.1], [-3.0, 11.0, 10.5], [6.0, 5.0, 0.0]])
    scores = head(pts)
    assert scores.argmax(1).tolist() == [0, 1, 2, 1, 0]
    # scores are the Gaussian log-likelihood up to a constant
    expected = -0.5 * torch.cdist(pts, target_means(3, 10.0)).pow(2)
    assert torch.allclose(scores, expected, atol=1e-4)


@pytest.mark.parametrize("loss", [covariance_loss, simplified_loss])
def test_finite_loss_and_gradients_with_zero_or_one_sample_of_a_class(loss):
    d = 4
    z = torch.randn(7, d, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 0])  # class 2 has one sample, class 3 none
    total = loss(z, y, 10.0, 1.0, d) + kurtosis_term(z, y, 0.2, "square", d)
    total.backward()
    assert torch.isfinite(total)
    assert torch.isfinite(z.grad).all()
    assert z.grad[5].abs().max() == 0  # the lone sample of class 2 contributes nothing
    # a batch with no class having two samples gives exactly 0
    z1 = torch.randn(3, d, requires_grad=True)
    out = loss(z1, torch.tensor([0, 1, 2]), 10.0, 1.0, d) + kurtosis_term(z1, torch.tensor([0, 1, 2]), 1.0, "linear", d)
    out.backward()
    assert float(out.detach()) == 0.0 and torch.isfinite(z1.grad).all()


def test_identical_samples_and_float32_latents_stay_finite():
    d = 3
    z = torch.full((6, d), 2.0, requires_grad=True)  # zero covariance: only the jitter keeps logdet finite
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    total = covariance_loss(z, y, 70.0, 1.0, d) + kurtosis_term(z, y, 0.2, "linear", d)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("loss", [covariance_loss, simplified_loss])
def test_no_nan_or_inf_over_a_mu_t_sweep(loss):
    gen = torch.Generator().manual_seed(4)
    d = 10
    for mu_t in torch.logspace(math.log10(5), math.log10(300), 12).tolist():
        z = (torch.randn(200, d, generator=gen) * 5).requires_grad_()  # an untrained encoder's output
        y = torch.randint(0, d, (200,), generator=gen)
        total = loss(z, y, mu_t, 1.0, d) + kurtosis_term(z, y, 0.2, "linear", d)
        total.backward()
        assert torch.isfinite(total), mu_t
        assert torch.isfinite(z.grad).all(), mu_t
        g = gaussianity_metrics(z, y, mu_t)
        assert all(math.isfinite(v) for v in g.values()), (mu_t, g)


def test_hist_rmse_small_for_target_samples_large_otherwise():
    gen = torch.Generator().manual_seed(5)
    z, y = _targets(20000, 3, 30.0, 1.0, gen)
    good = hist_rmse(z, y, 30.0, 1.0)
    assert good.max() < 0.02
    wide = z + 2 * torch.randn(len(y), 3, generator=gen, dtype=torch.float64)  # sigma_O ~ 2.2 instead of 1
    bad = hist_rmse(wide, y, 30.0, 1.0)
    assert bad.min() > 3 * good.max()
    metrics = gaussianity_metrics(z, y, 30.0, prefix="val_")
    assert metrics["val_kurtosis_mean"] == pytest.approx(3.0, abs=0.1)
    assert abs(metrics["val_skew_mean"]) < 0.05 and metrics["val_hist_rmse"] < 0.02
    assert metrics["val_own_mean_error"] < 0.05


def test_training_the_head_moves_latents_to_their_targets():
    """A linear head on separable features, trained with the covariance loss, maps each class near mu_T e_c."""
    gen = torch.Generator().manual_seed(6)
    d, mu_t = 3, 8.0
    y = torch.arange(d).repeat(100)
    feats = torch.randn(len(y), 5, generator=gen) * 0.3 + torch.randn(d, 5, generator=gen)[y] * 3
    torch.manual_seed(0)
    head = GaussianHead(5, d, mu_t)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss = covariance_loss(head.latent(feats), y, mu_t, 1.0, d)
        loss.backward()
        opt.step()
    assert (head(feats).argmax(1) == y).float().mean() == 1.0
    assert float(loss.detach()) < 1.0


# ---------------------------------------------------------------- sampler
@pytest.mark.parametrize("sizes", [(50, 50, 50), (300, 7, 40, 3)])
def test_balanced_batches_have_two_of_every_class(sizes):
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    batches = balanced_batches(y, 32, torch.Generator().manual_seed(1))
    assert len(batches) == len(y) // 32
    for b in batches:
        assert torch.bincount(y[b], minlength=len(sizes)).min() >= 2
    seen = torch.cat(batches)
    # every sample of a class large enough to need no repeats appears exactly once
    big = torch.tensor(sizes)[y] >= 2 * len(batches)
    counts = torch.bincount(seen, minlength=len(y))
    assert (counts[big] <= 1).all()
    assert counts.sum() >= len(batches) * 2 * len(sizes)
    with pytest.raises(ValueError, match="batch_size"):
        balanced_batches(y, 2 * len(sizes) - 1)


def test_balanced_batches_cover_the_epoch_and_shuffle():
    y = torch.arange(4).repeat(64)
    a = balanced_batches(y, 16, torch.Generator().manual_seed(0))
    b = balanced_batches(y, 16, torch.Generator().manual_seed(1))
    assert sorted(torch.cat(a).tolist()) == list(range(len(y)))
    assert [len(x) for x in a] == [16] * 16
    assert not torch.equal(torch.cat(a), torch.cat(b))


# ---------------------------------------------------------------- class subsets
def test_class_subsets():
    x = torch.arange(10.0)[:, None]
    y = torch.arange(10)
    xs, ys = select_classes(x, y, class_subset_map(10, classes=[7, 2, 5]))
    assert xs[:, 0].tolist() == [2.0, 5.0, 7.0] and ys.tolist() == [1, 2, 0]
    xg, yg = select_classes(x, y, class_subset_map(10, class_groups=[[0, 1, 2], [3, 4, 5], [6, 7, 8]]))
    assert xg[:, 0].tolist() == list(range(9)) and yg.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.equal(class_subset_map(4), torch.arange(4))
    for kwargs, msg in [({"classes": [1, 1]}, "twice"), ({"classes": [10]}, "out of range"),
                        ({"class_groups": [[0], []]}, "empty"), ({"classes": [0], "class_groups": [[1]]}, "either")]:
        with pytest.raises(ValueError, match=msg):
            class_subset_map(10, **kwargs)


# ---------------------------------------------------------------- shake-shake
def test_shakeshake_shapes_and_eval_determinism():
    torch.manual_seed(0)
    net = shakeshake26_2x96d(in_channels=1, width=8)
    assert net.out_features == 32
    x = torch.rand(4, 1, 28, 28)
    assert net(x).shape == (4, 32)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))  # alpha is redrawn in training
    full = shakeshake26_2x96d(in_channels=3)
    assert full.out_features == 384
    n_params = sum(p.numel() for p in full.parameters())
    assert 25e6 < n_params < 27.5e6  # Gastaldi et al. report 26.2M for 26 2x96d


def test_shake_mix_forward_alpha_backward_beta():
    torch.manual_seed(0)
    x1, x2 = torch.zeros(64, 3, requires_grad=True), torch.ones(64, 3, requires_grad=True)
    out = shake_mix(x1, x2, training=True)
    alpha = 1 - out[:, 0]
    assert ((alpha > 0) & (alpha < 1)).all() and alpha.std() > 0.1
    assert torch.equal(out, out[:, :1].expand(-1, 3))  # one alpha per sample
    out.sum().backward()
    beta = x1.grad[:, 0]
    assert torch.allclose(x1.grad + x2.grad, torch.ones(64, 3))
    assert not torch.allclose(beta, alpha)  # backward uses an independent draw
    assert torch.equal(shake_mix(x1, x2, training=False), torch.full((64, 3), 0.5))
