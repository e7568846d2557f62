"""Circle loss (Sun et al., CVPR 2020) on L2-normalized features: a batch-level metric-learning term.

Cross-entropy only asks the head to separate classes; Circle loss shapes the penultimate
geometry itself (compact classes, angular margins), which may help clean and adversarial
robustness (the generalization family tests it with ``circle_weight``). Pair-wise over the
batch, with cosine similarities s:

    L = softplus( LSE_n[ gamma * a_n * (s_n - D_n) ] + LSE_p[ -gamma * a_p * (s_p - D_p) ] )
    a_p = [1 + m - s_p]_+,  a_n = [s_n + m]_+  (detached),  D_p = 1 - m,  D_n = m

over every unordered pair (i < j) of the batch: positives share a label, negatives do not.
A batch with no positive (or no negative) pair has an empty sum, LSE = -inf, and L = 0 with
zero gradients (never NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_M = 0.25
DEFAULT_GAMMA = 256.0


def pair_similarities(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of the positive and of the negative pairs (i < j), as two flat tensors."""
    f = F.normalize(features.flatten(1).float(), dim=1)
    sim = f @ f.T
    n = len(labels)
    upper = torch.ones(n, n, dtype=torch.bool, device=sim.device).triu(diagonal=1)
    same = labels[:, None] == labels[None, :]
    return sim[same & upper], sim[~same & upper]


def circle_loss(features: torch.Tensor, labels: torch.Tensor, m: float = DEFAULT_M,
                gamma: float = DEFAULT_GAMMA) -> torch.Tensor:
    """The batch's Circle loss (a scalar); ``features`` (N, D) need not be normalized."""
    sp, sn = pair_similarities(features, labels)
    if len(sp) == 0 or len(sn) == 0:
        return features.sum() * 0.0  # empty LSE: L = softplus(-inf) = 0, kept in the graph
    ap = (1 + m - sp.detach()).clamp_min(0)
    an = (sn.detach() + m).clamp_min(0)
    logit_p = -gamma * ap * (sp - (1 - m))
    logit_n = gamma * an * (sn - m)
    return F.softplus(torch.logsumexp(logit_n, 0) + torch.logsumexp(logit_p, 0))


class CircleLoss(torch.nn.Module):
    """``circle_loss`` with its margin ``m`` and scale ``gamma`` fixed (the paper's 0.25 and 256 by default)."""

    def __init__(self, m: float = DEFAULT_M, gamma: float = DEFAULT_GAMMA):
        super().__init__()
        if not 0 <= m <= 1:
            raise ValueError(f"circle_m must be in [0, 1], got {m}")
        if gamma <= 0:
            raise ValueError(f"circle_gamma must be > 0, got {gamma}")
        self.m, self.gamma = float(m), float(gamma)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return circle_loss(features, labels, self.m, self.gamma)

    def extra_repr(self) -> str:
        return f"m={self.m}, gamma={self.gamma}"
