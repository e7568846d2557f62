"""The Gaussian head's settings act: sigma_T scales the scores by 1 / sigma_T^2, the configured kurtosis
penalty is the one applied (boundary cases the other RegNet tests leave at their defaults)."""

from __future__ import annotations

import pytest
import torch

from trainables.core.gaussian_head import KURTOSIS_PENALTIES, GaussianHead, gaussian_scores, kurtosis, unbiased_kurtosis


def _by_hand(z: torch.Tensor, mu_t: float, sigma_t: float) -> torch.Tensor:
    diff = z[:, None, :] - mu_t * torch.eye(z.shape[1])[None]
    return -0.5 * diff.pow(2).sum(-1) / sigma_t**2


@pytest.mark.parametrize("sigma_t", [0.5, 1.0, 2.0, 3.0])
def test_scores_are_the_log_likelihood_at_any_sigma(sigma_t):
    z = torch.randn(7, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    assert torch.allclose(gaussian_scores(z, 5.0, sigma_t), _by_hand(z, 5.0, sigma_t))


def test_doubling_sigma_divides_the_head_scores_by_four():
    torch.manual_seed(0)
    head = GaussianHead(6, 3, mu_t=4.0, sigma_t=1.0)
    wide = GaussianHead(6, 3, mu_t=4.0, sigma_t=2.0)
    wide.load_state_dict(head.state_dict())
    x = torch.randn(5, 6)
    assert torch.allclose(wide(x), head(x) / 4)


def _skewed_latents():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(60) % 3
    heavy = torch.randn(60, 3, generator=g).pow(3)  # K > 3
    flat = torch.rand(60, 3, generator=g)  # uniform: K < 3, so linear, abs and square all differ
    return torch.where((y == 0)[:, None], flat, heavy), y


@pytest.mark.parametrize("penalty", sorted(KURTOSIS_PENALTIES))
def test_the_head_applies_its_configured_kurtosis_penalty(penalty):
    z, y = _skewed_latents()
    head = GaussianHead(3, 3, kurtosis_penalty=penalty, kurtosis_factor=0.5)
    expected = KURTOSIS_PENALTIES[penalty](kurtosis(z, y) - 3).sum()
    assert head.kurtosis(z, y).item() == pytest.approx(expected.item(), rel=1e-5)
    plain = GaussianHead(3, 3, kurtosis_penalty=penalty)
    plain.load_state_dict(head.state_dict())
    assert head.training_loss(z, y).item() == pytest.approx(
        plain.training_loss(z, y).item() + 0.5 * expected.item(), rel=1e-5)


def test_penalties_give_different_values_on_the_same_latents():
    z, y = _skewed_latents()
    values = {p: GaussianHead(3, 3, kurtosis_penalty=p).kurtosis(z, y).item() for p in KURTOSIS_PENALTIES}
    assert len(set(values.values())) == len(values), values


@pytest.mark.parametrize("n", [4, 5, 20])
def test_unbiased_kurtosis_corrects_from_exactly_four_samples(n):
    b2 = torch.tensor([2.2], dtype=torch.float64)
    expected = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * (2.2 - 3) + 6) + 3
    assert unbiased_kurtosis(b2, torch.tensor([n])).item() == pytest.approx(expected)
    assert unbiased_kurtosis(b2, torch.tensor([3])).item() == pytest.approx(2.2)  # too few: left as b2
