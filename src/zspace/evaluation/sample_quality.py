"""Sample-quality metrics on features: FID, KID, an Inception-Score analogue, precision /
recall and density / coverage.

Every function takes feature arrays (N, d) — from whichever extractor the caller names —
and returns plain floats. Names say which extractor was used only where the caller does
(e.g. "FID-LeNet"): these numbers are not comparable with Inception-based ones.

    frechet_distance    ||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr (S1^1/2 S2 S1^1/2)^1/2 in float64,
                        the square root through eigvalsh of a symmetric PSD matrix, clipped
                        at 0, so never complex (Heusel et al. 2017)
    kernel_distance     KID: unbiased MMD^2 with the cubic polynomial kernel
                        (x.y/d + 1)^3, mean and std over random subsets (Binkowski et al. 2018)
    inception_score     exp E_x KL(p(y|x) || p(y)) from class probabilities, mean and std
                        over splits (Salimans et al. 2016)
    prdc                precision and recall (Kynkaanniemi et al. 2019) and density and
                        coverage (Naeem et al. 2020) from k-nearest-neighbour balls
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, DataError


def _features(x, name: str, min_rows: int = 2) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if torch.is_tensor(x) else x, dtype=np.float64)
    if a.ndim != 2:
        raise DataError(f"{name}: features must be (N, d), got shape {a.shape}")
    if len(a) < min_rows:
        raise DataError(f"{name}: need at least {min_rows} rows, got {len(a)}")
    if not np.isfinite(a).all():
        raise DataError(f"{name}: features contain NaN or infinite values")
    return a


def _pair(a, b, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = _features(a, "first set", min_rows), _features(b, "second set", min_rows)
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    return a, b


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a, b) -> float:
    """FID between two feature sets; needs more rows than feature dimensions in each
    (otherwise the covariances are singular and the number means little)."""
    a, b = _pair(a, b)
    d = a.shape[1]
    if len(a) <= d or len(b) <= d:
        raise DataError(f"FID needs more samples than feature dimensions ({d}): got {len(a)} and {len(b)}")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    r1 = _sqrtm_psd(s1)
    cross = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def kernel_distance(a, b, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets): unbiased MMD^2, kernel k(x, y) = (x.y / d + 1)^3."""
    a, b = _pair(a, b)
    m = min(subset_size, len(a), len(b))
    if num_subsets < 1:
        raise ConfigError(f"num_subsets must be >= 1, got {num_subsets}")
    if m < 2:
        raise ConfigError(f"KID needs subsets of at least 2 samples, got {m}")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(num_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        vals.append(off - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    """exp E KL(p(y|x) || p(y)) per split: (mean, std). ``probs`` (N, classes) rows sum to 1."""
    p = _features(probs, "class probabilities")
    if (p < 0).any() or not np.allclose(p.sum(1), 1, atol=1e-4):
        raise DataError("class probabilities must be non-negative rows summing to 1")
    if not 1 <= splits <= len(p):
        raise ConfigError(f"splits must lie in [1, {len(p)}], got {splits}")
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(np.clip(part, 1e-12, None)) - np.log(np.clip(py, 1e-12, None)))).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


@dataclass(frozen=True)
class PRDC:
    precision: float
    recall: float
    density: float
    coverage: float
    nearest_k: int


def _kth_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i:i + chunk], x)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, -1])   # +1: the row itself at 0
    return torch.cat(out)


def prdc(real, fake, nearest_k: int = 5, chunk: int = 1024) -> PRDC:
    """Precision, recall, density and coverage of ``fake`` against ``real`` (k-NN balls)."""
    r, f = _pair(real, fake, min_rows=nearest_k + 1)
    if nearest_k < 1:
        raise ConfigError(f"nearest_k must be >= 1, got {nearest_k}")
    r, f = torch.from_numpy(r).float(), torch.from_numpy(f).float()
    r_rad, f_rad = _kth_radius(r, nearest_k, chunk), _kth_radius(f, nearest_k, chunk)
    in_real_ball = torch.zeros(len(f), dtype=torch.bool)     # precision: fake inside some real ball
    density_count = torch.zeros(len(f), dtype=torch.float64)
    real_covered = torch.zeros(len(r), dtype=torch.bool)     # recall: real inside some fake ball
    nearest_fake = torch.full((len(r),), float("inf"))       # coverage: nearest fake within own ball
    for i in range(0, len(f), chunk):
        d = torch.cdist(f[i:i + chunk], r)                  # (c, R)
        inside = d <= r_rad[None, :]
        in_real_ball[i:i + chunk] = inside.any(1)
        density_count[i:i + chunk] = inside.sum(1).double()
        real_covered |= (d <= f_rad[i:i + chunk, None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, d.min(0).values)
    return PRDC(precision=float(in_real_ball.float().mean()), recall=float(real_covered.float().mean()),
                density=float(density_count.sum() / (nearest_k * len(f))),
                coverage=float((nearest_fake <= r_rad).float().mean()), nearest_k=nearest_k)


# ---- costs and smoothness of a generative model ---------------------------------------------
@dataclass(frozen=True)
class SamplingCost:
    samples_per_second: float
    seconds_per_sample: float
    num_samples: int
    device: str


def timed_sampling(sample, num_samples: int, batch_size: int, warmup: int | None = None) -> tuple[torch.Tensor, float]:
    """Draws ``num_samples`` with ``sample(start, count)`` in batches, after an untimed warm-up
    draw of ``warmup`` (default one batch: allocation, kernels); returns the samples and the
    seconds the timed draws took."""
    import time

    if num_samples < 1 or batch_size < 1:
        raise ConfigError("num_samples and batch_size must be >= 1")
    sample(0, min(warmup or batch_size, num_samples))
    start = time.perf_counter()
    parts = [sample(i, min(batch_size, num_samples - i)) for i in range(0, num_samples, batch_size)]
    return torch.cat(parts), time.perf_counter() - start


@torch.no_grad()
def sampling_cost(model, num_samples: int = 1000, batch_size: int = 500, **sample_kwargs) -> SamplingCost:
    """Wall time of ``model.sample`` for ``num_samples`` draws (after one warm-up batch)."""
    model.eval()
    _, seconds = timed_sampling(lambda i, n: model.sample(n, **sample_kwargs), num_samples, batch_size)
    device = str(next(model.parameters()).device)
    return SamplingCost(num_samples / seconds, seconds / num_samples, num_samples, device)


@dataclass(frozen=True)
class Smoothness:
    mean_ratio: float       # mean over paths of (largest step / mean step) in feature space
    worst_ratio: float      # the largest such ratio: 1 = evenly spaced, large = a jump
    num_paths: int
    steps: int


@torch.no_grad()
def latent_smoothness(model, x_a: torch.Tensor, x_b: torch.Tensor, features, steps: int = 16,
                      method: str = "linear", y=None) -> Smoothness:
    """Along interpolations between the codes of paired inputs (x_a[i], x_b[i]), the
    distances between consecutive decoded steps in feature space (``features``: a callable
    images -> (N, d)): a smooth latent space moves evenly, a jump shows as one large step.
    ``y`` (one label per pair) for a conditional model: both ends share it."""
    from ..explore.latent import interpolate

    if len(x_a) != len(x_b) or len(x_a) < 1:
        raise DataError(f"need the same positive number of start and end inputs, got {len(x_a)} and {len(x_b)}")
    model.eval()
    device = next(model.parameters()).device         # inputs to the model's device; features see what it decodes
    y = None if y is None else torch.as_tensor(y).long().to(device)
    za, zb = model.embed(x_a.to(device), y), model.embed(x_b.to(device), y)
    ratios = []
    for i in range(len(za)):
        path = model.decode_mean(interpolate(za[i], zb[i], steps, method), None if y is None else y[i])
        f = np.asarray(features(path.clamp(0, 1).cpu()), dtype=np.float64)
        step = np.linalg.norm(np.diff(f, axis=0), axis=1)
        ratios.append(step.max() / max(step.mean(), 1e-12))
    return Smoothness(float(np.mean(ratios)), float(np.max(ratios)), len(ratios), steps)
