"""RegNet: a Gaussian latent space per class instead of a softmax (issue 10; the thesis in seeds/002).

The encoder maps an image to z in R^d (d = number of classes). Class c targets N(mu_T e_c, sigma_T^2 I).
The batch-level losses compare, for every class present in a batch, the Gaussian fitted to that class's
latents N(mu_O,c, Sigma_O,c) with the target: the covariance loss is exactly KL(N_O || N_T) (the thesis's
bracket is 2 KL, hence the prefactor 1/2), the simplified loss is the same with Sigma_O reduced to its
diagonal. The kurtosis term F_k * penalty(K_c - 3) pushes every class toward a Gaussian's kurtosis.

Numerics (the thesis fought NaNs): statistics and losses run in float64 with autocast off, log-determinants
come from a Cholesky factor of Sigma_O + jitter*sigma_T^2*I, and a class with 0 or 1 samples in a batch is
replaced by a harmless stand-in *before* any log or inverse, so it adds exactly 0 and no NaN reaches the
gradients. Everything is batched over classes: no Python loop over samples or classes.

Prediction is by the nearest target mean; the head's scores are the Gaussian log-likelihood up to a
constant, -1/2 ||z - mu_T,c||^2 / sigma_T^2, so argmax, attacks (cross-entropy of the scores) and
calibration work unchanged.
"""

from __future__ import annotations

import math

import torch

from .losses import Term
from .metric_names import (
    ABS_SKEW_MEAN,
    HIST_RMSE,
    KURTOSIS_MEAN,
    OWN_MEAN_ERROR,
    SKEW_MEAN,
    STD_MEAN,
    TERMS_ON,
    split_metric,
)
from .models import Head
from .registry import declare, register

DEFAULT_JITTER = 1e-6  # relative to sigma_T^2; added to Sigma_O before the Cholesky factorization
_VAR_EPS = 1e-12  # floor on per-dimension variances in kurtosis / skewness (a collapsed dimension gives 0, not NaN)


def target_means(d: int, mu_t: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """(d, d) matrix whose row c is mu_T,c = mu_t * e_c."""
    return mu_t * torch.eye(d, dtype=dtype, device=device)


class GaussianHead(Head):
    """Linear map features -> latent z in R^d; scores are -1/2 ||z - mu_T,c||^2 / sigma_T^2 per class c.

    ``latent(features)`` gives z (for the RegNet losses, the latent plots and gaussianity metrics);
    ``forward(features)`` gives the scores, whose argmax is the nearest target mean. The head carries its
    objective (``regnet_loss``, ``kurtosis_penalty``): the ``regnet`` and ``kurtosis`` batch terms call
    ``objective`` / ``kurtosis`` on it, so the Gaussian-latent fields act exactly when the head is chosen.
    """

    def __init__(self, in_features: int, d: int, mu_t: float = 70.0, sigma_t: float = 1.0,
                 regnet_loss: str = "covariance", kurtosis_penalty: str = "linear",
                 kurtosis_estimator: str = "population", kurtosis_factor: float = 0.0):
        super().__init__()
        if mu_t <= 0 or sigma_t <= 0:
            raise ValueError(f"mu_t and sigma_t must be > 0 (got mu_t={mu_t}, sigma_t={sigma_t})")
        for value, names, what in ((regnet_loss, REGNET_LOSSES, "regnet_loss"),
                                   (kurtosis_penalty, KURTOSIS_PENALTIES, "kurtosis_penalty"),
                                   (kurtosis_estimator, KURTOSIS_ESTIMATORS, "kurtosis_estimator")):
            if value not in names:
                raise ValueError(f"unknown {what} '{value}'; choose one of: {', '.join(names)}")
        self.linear = torch.nn.Linear(in_features, d)
        self.d, self.mu_t, self.sigma_t = d, float(mu_t), float(sigma_t)
        self.regnet_loss, self.kurtosis_penalty = regnet_loss, kurtosis_penalty
        self.kurtosis_estimator, self.kurtosis_factor = kurtosis_estimator, float(kurtosis_factor)

    def latent(self, features: torch.Tensor) -> torch.Tensor:
        """z in float32 even under autocast: at mu_T = 300 a bf16 z (8 bits of mantissa: steps of 1 to 2 near
        300) moves the covariance loss by ~10 % and the scores by hundreds. The statistics then run in float64."""
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.linear(features.float())

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        return gaussian_scores(z, self.mu_t, self.sigma_t)

    def objective(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The configured RegNet loss of a batch (float32 scalar; computed in float64)."""
        return REGNET_LOSSES[self.regnet_loss](z, y, self.mu_t, self.sigma_t, self.d).float()

    def kurtosis(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """sum_c penalty(K_c - 3), unweighted (the term's weight is F_k)."""
        return kurtosis_term(z, y, 1.0, self.kurtosis_penalty, self.d, self.kurtosis_estimator).float()

    def training_loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The thesis's L_TOT of a batch (its eq. 2.6 / 2.7): the RegNet loss + F_k * sum_c penalty(K_c - 3).
        What the thesis's FGSM differentiates (``fgsm_loss: training``)."""
        loss = self.objective(z, y)
        return loss + self.kurtosis_factor * self.kurtosis(z, y) if self.kurtosis_factor else loss

    def extra_repr(self) -> str:
        return f"d={self.d}, mu_t={self.mu_t}, sigma_t={self.sigma_t}, loss={self.regnet_loss}"


def gaussian_scores(z: torch.Tensor, mu_t: float, sigma_t: float = 1.0) -> torch.Tensor:
    """-1/2 ||z - mu_t e_c||^2 / sigma_t^2 for every class c, as (N, d), in O(N d).

    Uses ||z - mu e_c||^2 = ||z||^2 - 2 mu z_c + mu^2 instead of materializing (N, d, d) differences.
    """
    sq = z.pow(2).sum(1, keepdim=True)
    return -0.5 * (sq - 2 * mu_t * z + mu_t**2) / sigma_t**2


# ---------------------------------------------------------------- per-class statistics
def _class_stats(z: torch.Tensor, y: torch.Tensor, num_classes: int):
    """Float64 per-class counts (C,), means (C, d), centered latents (N, d) and one-hot (N, C)."""
    z = z.double()
    onehot = torch.nn.functional.one_hot(y, num_classes).to(z.dtype)
    counts = onehot.sum(0)
    means = onehot.T @ z / counts.clamp(min=1)[:, None]
    centered = z - means[y]
    return counts, means, centered, onehot


def class_covariances(z: torch.Tensor, y: torch.Tensor, num_classes: int):
    """Per-class unbiased covariances (C, d, d) in float64, with counts and means (classes with < 2 samples: 0)."""
    counts, means, centered, onehot = _class_stats(z, y, num_classes)
    cov = torch.einsum("nc,ni,nj->cij", onehot, centered, centered) / (counts - 1).clamp(min=1)[:, None, None]
    return counts, means, cov


def _regnet_terms(z, y, mu_t, sigma_t, d, jitter, diagonal: bool) -> torch.Tensor:
    """Per-class losses (C,) in float64; classes with fewer than 2 samples give exactly 0."""
    if z.shape[1] != d:
        raise ValueError(f"latent has {z.shape[1]} dimensions, expected d={d}")
    with torch.autocast(device_type=z.device.type, enabled=False):
        counts, means, cov = class_covariances(z, y, d)
        present = counts >= 2
        var_t = float(sigma_t) ** 2
        eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
        targets = target_means(d, mu_t, dtype=cov.dtype, device=cov.device)
        # Stand-in for absent classes, set before any log/inverse so their gradients are exactly 0.
        cov = torch.where(present[:, None, None], cov, var_t * eye) + (jitter * var_t) * eye
        means = torch.where(present[:, None], means, targets)
        if diagonal:
            var = torch.diagonal(cov, dim1=1, dim2=2)
            logdet_o = var.log().sum(1)
            trace = var.sum(1)
        else:
            chol, info = torch.linalg.cholesky_ex(cov)
            if bool((info > 0).any()):  # numerically indefinite: retry with a larger, scale-aware jitter
                scale = torch.diagonal(cov, dim1=1, dim2=2).mean(1).clamp(min=var_t)
                chol = torch.linalg.cholesky(cov + 1e-6 * scale[:, None, None] * eye)
            logdet_o = 2 * torch.diagonal(chol, dim1=1, dim2=2).log().sum(1)
            trace = torch.diagonal(cov, dim1=1, dim2=2).sum(1)
        maha = (targets - means).pow(2).sum(1) / var_t
        terms = 0.5 * (d * math.log(var_t) - logdet_o - d + trace / var_t + maha)
        return torch.where(present, terms, torch.zeros_like(terms))


def covariance_loss(z: torch.Tensor, y: torch.Tensor, mu_t: float, sigma_t: float, d: int,
                    jitter: float = DEFAULT_JITTER) -> torch.Tensor:
    """Sum over classes present of KL(N(mu_O,c, Sigma_O,c) || N(mu_T,c, sigma_T^2 I)) (thesis eq. 2.1 with 1/2).

    L_c = 1/2 [ log(|Sigma_T| / |Sigma_O,c|) - d + tr(Sigma_T^-1 Sigma_O,c) + |mu_T,c - mu_O,c|^2 / sigma_T^2 ].
    Float64 scalar; Sigma_O,c is the unbiased sample covariance plus ``jitter`` * sigma_T^2 * I.
    """
    return _regnet_terms(z, y, mu_t, sigma_t, d, jitter, diagonal=False).sum()


def simplified_loss(z: torch.Tensor, y: torch.Tensor, mu_t: float, sigma_t: float, d: int,
                    jitter: float = DEFAULT_JITTER) -> torch.Tensor:
    """The diagonal approximation (thesis eq. 2.3 with 1/2): the covariance loss with Sigma_O,c -> diag(Sigma_O,c).

    L_c = 1/2 [ log(sigma_T^2d / prod_i Sigma_O,c^ii) - d + sum_i Sigma_O,c^ii / sigma_T^2
                + |mu_T,c - mu_O,c|^2 / sigma_T^2 ].
    """
    return _regnet_terms(z, y, mu_t, sigma_t, d, jitter, diagonal=True).sum()


REGNET_LOSSES = declare("regnet_loss", {"covariance": covariance_loss, "simplified": simplified_loss})


# ---------------------------------------------------------------- moments and the kurtosis term
def class_moments(z: torch.Tensor, y: torch.Tensor, num_classes: int,
                  estimator: str = "population") -> dict[str, torch.Tensor]:
    """Per-class, per-dimension mean, std, skewness and kurtosis, each (C, d) float64, and counts (C,).

    Moments are the population (biased) ones, so kurtosis = m4 / m2^2 (3 for a Gaussian in the limit, >= 1
    always) and skewness = m3 / m2^1.5. With ``estimator="unbiased"`` the kurtosis is the bias-corrected
    G2 + 3 (``unbiased_kurtosis``). Classes with fewer than 2 samples (4 for ``unbiased``) get mean/std 0,
    skewness 0, kurtosis 3 (neutral values: they add nothing to the kurtosis term).
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        counts, means, centered, onehot = _class_stats(z, y, num_classes)
        n = counts.clamp(min=1)[:, None]
        m2 = onehot.T @ centered.pow(2) / n
        m3 = onehot.T @ centered.pow(3) / n
        m4 = onehot.T @ centered.pow(4) / n
        present = (counts >= 2)[:, None]
        safe_m2 = torch.where(present, m2, torch.ones_like(m2)) + _VAR_EPS
        kurt = KURTOSIS_ESTIMATORS[estimator](m4 / safe_m2.pow(2), counts[:, None])
        kurt = torch.where(counts[:, None] >= KURTOSIS_MIN_SAMPLES[estimator], kurt, torch.full_like(m4, 3.0))
        skew = torch.where(present, m3 / safe_m2.pow(1.5), torch.zeros_like(m3))
        std = torch.where(present, m2, torch.zeros_like(m2)).clamp(min=0).sqrt()
        return {"count": counts, "mean": torch.where(present, means, torch.zeros_like(means)), "std": std,
                "skewness": skew, "kurtosis": kurt}


def unbiased_kurtosis(population: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """G2 + 3 from the population kurtosis b2 = m4 / m2^2 of n samples (Joanes & Gill 1998's G2):
    G2 = (n - 1) / ((n - 2)(n - 3)) * ((n + 1)(b2 - 3) + 6). For Gaussian samples E[G2] = 0 exactly (G2 is
    k4 / k2^2, and k4 is unbiased for the fourth cumulant and independent of the scale), while
    E[b2] = 3 (n - 1) / (n + 1): 2.14 at 6 samples, 2.71 at 20. Needs n >= 4 (smaller n: left as b2)."""
    n = n.to(population.dtype)
    safe = (n >= 4)
    m = torch.where(safe, n, torch.full_like(n, 4.0))
    g2 = (m - 1) / ((m - 2) * (m - 3)) * ((m + 1) * (population - 3) + 6)
    return torch.where(safe, g2 + 3, population)


KURTOSIS_ESTIMATORS = declare("kurtosis_estimator", {
    "population": lambda b2, n: b2,  # the thesis's eq. 2.5: biased low on a batch (2.14 at 6 samples, 2.71 at 20)
    "unbiased": unbiased_kurtosis,  # bias-corrected G2 + 3: mean 3 on Gaussian samples at any n >= 4
})
KURTOSIS_MIN_SAMPLES = {"population": 2, "unbiased": 4}  # fewer samples of a class in a batch: it adds 0


def kurtosis(z: torch.Tensor, y: torch.Tensor, num_classes: int | None = None,
             estimator: str = "population") -> torch.Tensor:
    """K_c = (1/d) sum_j (1/N_c) sum_n ((z_nj - mu_O,c,j) / sigma_O,c,j)^4 per class, (C,) float64.

    sigma_O is the population std (so a Gaussian gives 3 in the limit of many samples); ``estimator``
    ``unbiased`` corrects each dimension's value for the class's sample count. Classes with too few samples give 3.
    """
    num_classes = z.shape[1] if num_classes is None else num_classes
    return class_moments(z, y, num_classes, estimator)["kurtosis"].mean(1)


KURTOSIS_PENALTIES = declare("kurtosis_penalty", {
    "linear": lambda e: e,  # as printed in the thesis (eqs. 2.6-2.7): pulls K toward its minimum 1
    "abs": torch.abs,  # minimum at K = 3
    "square": torch.square,  # minimum at K = 3, smooth
})


def kurtosis_term(z: torch.Tensor, y: torch.Tensor, factor: float, penalty: str = "linear",
                  num_classes: int | None = None, estimator: str = "population") -> torch.Tensor:
    """F_k * sum over classes with enough samples (2, or 4 for ``unbiased``) of penalty(K_c - 3), float64 scalar."""
    if penalty not in KURTOSIS_PENALTIES:
        raise ValueError(f"unknown kurtosis_penalty '{penalty}'; choose one of: {', '.join(KURTOSIS_PENALTIES)}")
    num_classes = z.shape[1] if num_classes is None else num_classes
    counts = torch.bincount(y, minlength=num_classes)
    excess = KURTOSIS_PENALTIES[penalty](kurtosis(z, y, num_classes, estimator) - 3.0)
    enough = counts >= KURTOSIS_MIN_SAMPLES[estimator]
    return factor * torch.where(enough, excess, torch.zeros_like(excess)).sum()


# ---------------------------------------------------------------- gaussianity metrics
def hist_rmse(z: torch.Tensor, y: torch.Tensor, mu_t: float, sigma_t: float = 1.0, bins: int = 40,
              width: float = 4.0) -> torch.Tensor:
    """Per-class RMSE between the density histogram of each class's own-axis latent z_c and the N(mu_T, sigma_T) pdf.

    The histogram spans mu_T +- ``width`` sigma_T and is normalized by the class's whole count, so samples far from
    the target (the outliers that inflate kurtosis) lower the in-range density and raise the RMSE. (C,) float64;
    NaN for classes with no samples.
    """
    num_classes = z.shape[1]
    z = z.detach().double()
    own = z.gather(1, y[:, None]).squeeze(1)
    lo, hi = mu_t - width * sigma_t, mu_t + width * sigma_t
    binw = (hi - lo) / bins
    idx = ((own - lo) / binw).floor().long()
    inside = (idx >= 0) & (idx < bins)
    flat = y[inside] * bins + idx[inside]
    hist = torch.bincount(flat, minlength=num_classes * bins).view(num_classes, bins).double()
    counts = torch.bincount(y, minlength=num_classes).double()
    density = hist / (counts[:, None] * binw)
    centers = lo + binw * (torch.arange(bins, dtype=torch.float64, device=z.device) + 0.5)
    pdf = torch.exp(-0.5 * ((centers - mu_t) / sigma_t) ** 2) / (sigma_t * math.sqrt(2 * math.pi))
    rmse = (density - pdf).pow(2).mean(1).sqrt()
    return torch.where(counts > 0, rmse, torch.full_like(rmse, float("nan")))


def gaussianity_metrics(z: torch.Tensor, y: torch.Tensor, mu_t: float, sigma_t: float = 1.0,
                        prefix: str = "") -> dict[str, float]:
    """Scalar summaries of how Gaussian the class latents are: mean kurtosis / |skewness| / std over classes and
    dimensions, the own-axis mean error, and the mean histogram RMSE against N(mu_T, sigma_T)."""
    num_classes = z.shape[1]
    m = class_moments(z.detach(), y, num_classes)
    present = m["count"] >= 2
    own = torch.arange(num_classes, device=z.device)
    rmse = hist_rmse(z, y, mu_t, sigma_t)

    def avg(t):
        return float(t[present].mean()) if bool(present.any()) else float("nan")

    stats = {
        KURTOSIS_MEAN: avg(m["kurtosis"]),
        SKEW_MEAN: avg(m["skewness"]),
        ABS_SKEW_MEAN: avg(m["skewness"].abs()),
        STD_MEAN: avg(m["std"]),
        OWN_MEAN_ERROR: avg((m["mean"][own, own] - mu_t).abs()[:, None]),
        HIST_RMSE: float(rmse[~rmse.isnan()].mean()) if bool((~rmse.isnan()).any()) else float("nan"),
    }
    return {f"{prefix}{k}": v for k, v in stats.items()}


# ---------------------------------------------------------------- class-balanced batches
def balanced_batches(y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
                     min_per_class: int = 2) -> list[torch.Tensor]:
    """One epoch of index batches, each holding >= ``min_per_class`` samples of every class present in ``y``.

    Per class, the first ``min_per_class * num_batches`` indices of a random order are reserved, ``min_per_class``
    per batch (cycling, i.e. repeating samples, when a class is too small); the remaining indices are shuffled and
    spread over the batches. Batches have ``batch_size`` +- 1 samples (the last ones may be smaller when the
    reservations repeat samples). All tensor ops; the only Python loop is over batches.
    """
    classes, y_compact = torch.unique(y, return_inverse=True)
    num_classes, n = len(classes), len(y)
    if batch_size < min_per_class * num_classes:
        raise ValueError(f"batch_size {batch_size} < min_per_class {min_per_class} x {num_classes} classes")
    device = y.device
    num_batches = max(1, n // batch_size)
    perm = torch.randperm(n, generator=generator).to(device)
    order = perm[torch.argsort(y_compact[perm], stable=True)]  # grouped by class, random within class
    counts = torch.bincount(y_compact, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    need = min_per_class * num_batches
    slots = torch.arange(need, device=device)
    reserved = order[starts[:, None] + slots[None, :] % counts[:, None]]  # (C, need)
    reserved = reserved.view(num_classes, num_batches, min_per_class).permute(1, 0, 2).reshape(num_batches, -1)
    rank = torch.arange(n, device=device) - starts[y_compact[order]]
    rest = order[rank >= need]
    rest = rest[torch.randperm(len(rest), generator=generator).to(device)]
    return [torch.cat([r, f]) for r, f in zip(reserved, torch.tensor_split(rest, num_batches))]


# ---------------------------------------------------------------- registrations
@register("head", "gaussian")
def gaussian(in_features: int, num_classes: int, *, mu_t: float, sigma_t: float, regnet_loss: str,
             kurtosis_factor: float, kurtosis_penalty: str, kurtosis_estimator: str) -> GaussianHead:
    """RegNet's Gaussian latent head, d = number of classes. ``kurtosis_factor`` is declared here (and weighs the
    ``kurtosis`` term, and the head's ``training_loss``) so that it acts only with this head."""
    return GaussianHead(in_features, num_classes, mu_t, sigma_t, regnet_loss, kurtosis_penalty, kurtosis_estimator,
                        kurtosis_factor)


@register("term", "regnet")
def regnet_term(*, head: str) -> Term | None:
    """The covariance / simplified loss of the Gaussian head's latents (weight 1), logged as ``train_regnet``."""
    if not TERMS_ON["regnet"](head=head):
        return None
    return Term("regnet", 1.0, lambda out, y, model: model.head.objective(out.latent, y))


@register("term", "kurtosis")
def kurtosis_batch_term(*, head: str, kurtosis_factor: float) -> Term | None:
    """F_k * sum_c penalty(K_c - 3) on the Gaussian head's latents, logged (unweighted) as ``train_kurtosis``."""
    if not TERMS_ON["kurtosis"](head=head, kurtosis_factor=kurtosis_factor):
        return None
    return Term("kurtosis", kurtosis_factor, lambda out, y, model: model.head.kurtosis(out.latent, y))


# ---------------------------------------------------------------- the per-epoch evaluator
def latents(model, split, batch_size: int = 1024) -> torch.Tensor:
    """The head's latents of a split (eval mode, no grad), concatenated."""
    from .attacks import eval_mode

    with torch.no_grad(), eval_mode(model):
        return torch.cat([model.outputs(split.x[i : i + batch_size]).latent.float()
                          for i in range(0, len(split), batch_size)])




def gaussianity_evaluator(trainer) -> dict[str, float]:
    """Trainer hook: ``GAUSSIANITY_METRICS`` of the reported model's validation latents, every epoch."""
    model, cfg = trainer.eval_model(), trainer.cfg
    z = latents(model, trainer.data.val, cfg.eval_batch_size)
    return {split_metric("val", k): v for k, v in gaussianity_metrics(z, trainer.data.val.y, cfg.mu_t, cfg.sigma_t).items()}
