"""Per-example outlier scores from generative models, and how well they separate.

Every score is (N,) float64 with **higher = more abnormal**. Each takes a model and
batches (``Batch`` objects, e.g. ``run.loader("test").epoch(0)``) or precomputed arrays.

    reconstruction_scores   ||x - x_hat|| per example, L1, L2 (mean squared) or L-inf
    negative_elbo           -ELBO, one posterior sample (nats)
    importance_sampled_nll  -log p(x) estimated with k importance samples (nats)
    exact_nll               -log p(x) of an autoregressive model (PixelCNN), exact (nats)
    likelihood_ratio        NLL under the model minus NLL under a background model trained
                            on mutated inputs (Ren et al. 2019): population-level pixel
                            statistics cancel, semantic content remains
    complexity_corrected    NLL in bits minus a lossless compressor's code length in bits
                            (Serrà et al. 2020; the compressor here is PNG, zlib level 9)
    typicality              |NLL - mean training NLL| per example (Nalisnick et al. 2019b);
    typicality_test         ... and their batch test with a bootstrap threshold
    latent_mahalanobis      Mahalanobis distance of the code under a Gaussian fitted to the
                            training codes (the aggregate posterior, to second order)
    ScoreCombination        several scores standardised on training rows and averaged (DoSE's
                            idea, Morningstar et al. 2021)
    IsolationScores         an isolation forest (Liu et al. 2008) fitted by scikit-learn, kept as
                            plain arrays so a detector stores it without pickling

Metrics: ``auroc``, ``auprc`` (average precision, outliers positive) and
``fpr_at_tpr`` (false-positive rate when 95% of outliers are caught).
"""
from __future__ import annotations

import io
import math
from typing import Iterable

import numpy as np

from ..data.loader import Batch
from ..errors import ConfigError, DataError
from ..models.capabilities import ExactLikelihood, ImportanceSampledLikelihood, LatentVariableModel, Reconstructs
from .likelihood import collect, importance_sampled_log_likelihood

NORMS = ("l1", "l2", "linf")
LN2 = math.log(2.0)


def _per_example(model, batches: Iterable[Batch], fn) -> np.ndarray:
    """``fn(x, y)`` -> (B,) scores for every batch, moved to the model's device, stacked."""
    return collect(model, batches, lambda m, x, y: fn(x, y), device=next(model.parameters()).device)


def reconstruction_scores(model, batches: Iterable[Batch], norm: str = "l2") -> np.ndarray:
    """Per-example reconstruction error: mean |e| (l1), mean e^2 (l2) or max |e| (linf)."""
    _needs(model, "reconstruct", "reconstruction")
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    reduce = {"l1": lambda e: e.abs().mean(1), "l2": lambda e: (e ** 2).mean(1), "linf": lambda e: e.abs().amax(1)}
    return _per_example(model, batches, lambda x, y: reduce[norm]((model.reconstruct(x, y) - x).flatten(1).double()))


_CAPABILITY = {"reconstruct": Reconstructs, "elbo_terms": LatentVariableModel,
               "log_importance_weights": ImportanceSampledLikelihood, "log_prob": ExactLikelihood}


def _needs(model, method: str, score: str) -> None:
    if not isinstance(model, _CAPABILITY[method]):
        raise ConfigError(f"the {score} score needs a model with {method}() "
                          f"({'an autoregressive model' if method == 'log_prob' else 'a VAE'}); "
                          f"{type(model).__name__} has none")


def negative_elbo(model, batches: Iterable[Batch]) -> np.ndarray:
    _needs(model, "elbo_terms", "negative-ELBO")

    def score(x, y):
        rec, kl = model.elbo_terms(x, y)
        return (kl - rec).double()
    return _per_example(model, batches, score)


def importance_sampled_nll(model, batches: Iterable[Batch], num_samples: int = 100) -> np.ndarray:
    _needs(model, "log_importance_weights", "importance-sampled NLL")
    return _per_example(model, batches, lambda x, y: -importance_sampled_log_likelihood(model, x, num_samples, y=y))


def exact_nll(model, batches: Iterable[Batch]) -> np.ndarray:
    """-log p(x) in nats per example, exact, from an autoregressive model's ``log_prob``."""
    _needs(model, "log_prob", "exact NLL")
    return _per_example(model, batches, lambda x, y: -model.log_prob(x, y).double())


def likelihood_ratio(nll_model, nll_background) -> np.ndarray:
    """-(log p_model(x) - log p_background(x)) = NLL_model - NLL_background (nats)."""
    a, b = _same_length(nll_model, nll_background, "model NLL", "background NLL")
    return a - b


def png_bits(images) -> np.ndarray:
    """Lossless code length of each image in bits: PNG (zlib level 9) of the 8-bit pixels.

    ``images``: (N, H, W) or (N, C, H, W) with C in (1, 3), uint8 or floats in [0, 1].
    Includes PNG's fixed headers (a constant per image size, so rankings are unaffected).
    """
    from PIL import Image

    x = np.asarray(images)
    if x.ndim == 4:
        if x.shape[1] not in (1, 3):
            raise DataError(f"images must have 1 or 3 channels, got shape {x.shape}")
        x = x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)
    if x.ndim not in (3, 4) or len(x) == 0:
        raise DataError(f"need a non-empty stack of images (N, H, W) or (N, C, H, W), got shape {x.shape}")
    if x.dtype != np.uint8:
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataError("float images must lie in [0, 1]")
        x = np.round(x * 255).astype(np.uint8)
    bits = np.empty(len(x))
    for i, img in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", optimize=True, compress_level=9)
        bits[i] = 8 * buf.tell()
    return bits


def complexity_corrected(nll_nats, complexity_bits) -> np.ndarray:
    """S(x) = NLL(x) in bits - L(x), the compressor's code length in bits (Serrà et al. 2020):
    how many more bits the model needs than a generic compressor."""
    a, b = _same_length(nll_nats, complexity_bits, "NLL", "code length")
    return a / LN2 - b


def typicality(nll, train_nll) -> np.ndarray:
    """|NLL(x) - H| with H the mean training NLL: atypically likely inputs are flagged too."""
    t = np.asarray(train_nll, dtype=np.float64)
    if t.ndim != 1 or len(t) < 2 or not np.isfinite(t).all():
        raise DataError("need at least two finite training NLLs to estimate the typical set")
    return np.abs(np.asarray(nll, dtype=np.float64) - t.mean())


def typicality_test(batch_nll, train_nll, alpha: float = 0.01, bootstrap: int = 1000,
                    seed: int = 0) -> tuple[bool, float, float]:
    """Nalisnick et al. (2019b)'s batch test: is this batch of M inputs typical?

    The statistic |mean batch NLL - H| is compared with its (1 - alpha) quantile over
    ``bootstrap`` batches of the same size resampled from the training NLLs.
    Returns (is_outlier_batch, statistic, threshold).
    """
    b = np.asarray(batch_nll, dtype=np.float64)
    t = np.asarray(train_nll, dtype=np.float64)
    if b.ndim != 1 or len(b) < 1 or not np.isfinite(b).all():
        raise DataError("the batch needs at least one finite NLL")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")
    if bootstrap < 1:
        raise ConfigError(f"bootstrap must be >= 1, got {bootstrap}")
    typicality(b, t)                       # validates the training NLLs
    h = float(t.mean())
    rng = np.random.default_rng(seed)
    stats = np.abs(t[rng.integers(0, len(t), size=(bootstrap, len(b)))].mean(1) - h)
    threshold = float(np.quantile(stats, 1 - alpha))
    statistic = float(abs(b.mean() - h))
    return statistic > threshold, statistic, threshold


class LatentGaussian:
    """A Gaussian fitted to training codes; ``score`` is the Mahalanobis distance."""

    def __init__(self, codes, ridge: float = 1e-6):
        z = np.asarray(codes, dtype=np.float64)
        if z.ndim != 2 or len(z) <= z.shape[1]:
            raise DataError(f"need more codes than dimensions to fit a covariance, got shape {z.shape}")
        self.mean = z.mean(0)
        cov = np.atleast_2d(np.cov(z, rowvar=False))      # one latent dimension: a 1x1 matrix
        # a ridge relative to the average variance keeps collapsed (inactive) dimensions invertible
        cov += ridge * max(float(np.trace(cov)) / len(cov), 1e-12) * np.eye(len(cov))
        self.precision = np.linalg.inv(cov)

    @classmethod
    def from_arrays(cls, mean: np.ndarray, precision: np.ndarray) -> "LatentGaussian":
        """A fitted Gaussian restored from its stored mean and precision."""
        g = cls.__new__(cls)
        g.mean, g.precision = np.asarray(mean, dtype=np.float64), np.asarray(precision, dtype=np.float64)
        return g

    def score(self, codes) -> np.ndarray:
        d = np.asarray(codes, dtype=np.float64) - self.mean
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.precision, d), 0.0))


class IsolationScores:
    """An isolation forest (Liu, Ting & Zhou 2008) as plain arrays: scikit-learn fits it, the
    trees are copied into padded (trees, nodes) arrays, and ``score`` walks them vectorised, so
    the forest is saved in safetensors beside a detector's model and nothing is unpickled.

    ``score`` is the anomaly score s(x) = 2^(-E[h(x)] / c(psi)) (higher = more abnormal), with
    h the path length (the depth of x's leaf plus c(leaf size)) and psi the subsample size; it
    equals ``-IsolationForest.score_samples``.
    """

    ARRAYS = ("feature", "threshold", "left", "right", "leaf_depth", "subsample")

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = {k: np.asarray(arrays[k]) for k in self.ARRAYS}

    @classmethod
    def fit(cls, X, seed: int, trees: int = 100) -> "IsolationScores":
        from sklearn.ensemble import IsolationForest

        # every tree sees all features in their order (max_features=1.0), so its feature
        # indices are the columns of X
        forest = IsolationForest(n_estimators=trees, max_features=1.0, random_state=seed).fit(
            np.asarray(X, dtype=np.float64))
        nodes = max(e.tree_.node_count for e in forest.estimators_)
        a = {"feature": np.zeros((trees, nodes), np.int64), "threshold": np.zeros((trees, nodes)),
             "left": np.full((trees, nodes), -1, np.int64), "right": np.full((trees, nodes), -1, np.int64),
             "leaf_depth": np.zeros((trees, nodes))}
        for i, e in enumerate(forest.estimators_):
            t, n = e.tree_, e.tree_.node_count
            a["feature"][i, :n], a["threshold"][i, :n] = np.maximum(t.feature, 0), t.threshold
            a["left"][i, :n], a["right"][i, :n] = t.children_left, t.children_right
            depth = np.zeros(n)
            for node in range(n):                           # children come after their parent
                for child in (t.children_left[node], t.children_right[node]):
                    if child >= 0:
                        depth[child] = depth[node] + 1
            a["leaf_depth"][i, :n] = depth + average_path_length(t.n_node_samples)
        a["subsample"] = np.array([forest.max_samples_], np.int64)
        return cls(a)

    def score(self, X) -> np.ndarray:
        # scikit-learn compares float32 features with float64 thresholds: the same here
        x = np.asarray(X, dtype=np.float32).astype(np.float64)
        a, rows = self.arrays, np.arange(len(x))
        total = np.zeros(len(x))
        for f, th, left, right, h in zip(a["feature"], a["threshold"], a["left"], a["right"], a["leaf_depth"]):
            node = np.zeros(len(x), np.int64)
            inner = left[node] >= 0
            while inner.any():
                go_left = x[rows, f[node]] <= th[node]
                node = np.where(inner, np.where(go_left, left[node], right[node]), node)
                inner = left[node] >= 0
            total += h[node]
        c = average_path_length(np.array([a["subsample"][0]]))[0]
        return 2.0 ** (-total / len(a["feature"]) / c)


def average_path_length(n) -> np.ndarray:
    """c(n), the mean path length of an unsuccessful binary-search-tree lookup among n points:
    2 H(n - 1) - 2 (n - 1) / n, with H(i) ~ ln i + Euler's gamma; c(1) = 0, c(2) = 1."""
    n = np.asarray(n, dtype=np.float64)
    out = np.where(n <= 1, 0.0, 1.0)
    big = n > 2
    m = np.where(big, n, 3.0)
    return np.where(big, 2.0 * (np.log(m - 1.0) + np.euler_gamma) - 2.0 * (m - 1.0) / m, out)


class ScoreCombination:
    """Several scores made one, with statistics fitted on training rows only (the idea of DoSE,
    Morningstar et al. 2021: no outlier is needed to weigh them).

    Each score is standardised by its training median and interquartile range (robust: the
    training rows of an unsupervised detector hold outliers too), then

      ``method="mean"``      averaged: one-sided, every score says "higher = more abnormal";
      ``method="gaussian"``  the Mahalanobis distance of the standardised vector under a
                             Gaussian fitted to the training vectors: two-sided, and it sees
                             combinations the training data never shows (a low NLL *with* a
                             low compressed size, say), as DoSE's density over statistics does.

    ``fit`` takes (N, S) training scores, one column per score.
    """

    METHODS = ("mean", "gaussian")

    def __init__(self, center: np.ndarray, scale: np.ndarray, precision: np.ndarray | None = None):
        self.center, self.scale = np.asarray(center, np.float64), np.asarray(scale, np.float64)
        self.precision = None if precision is None else np.asarray(precision, np.float64)

    @property
    def method(self) -> str:
        return "mean" if self.precision is None else "gaussian"

    @classmethod
    def fit(cls, train_scores, method: str = "mean", ridge: float = 1e-3) -> "ScoreCombination":
        if method not in cls.METHODS:
            raise ConfigError(f"unknown combination {method!r}; choose one of {', '.join(cls.METHODS)}")
        s = np.asarray(train_scores, dtype=np.float64)
        if s.ndim != 2 or len(s) < 2 or not np.isfinite(s).all():
            raise DataError(f"need finite training scores (N >= 2, S), got shape {s.shape}")
        lo, mid, hi = np.quantile(s, (0.25, 0.5, 0.75), axis=0)
        spread, fallback = hi - lo, s.std(0)
        scale = np.where(spread > 0, spread, np.where(fallback > 0, fallback, 1.0))
        if method == "mean":
            return cls(mid, scale)
        z = (s - mid) / scale
        if len(z) <= z.shape[1]:
            raise DataError(f"need more training rows than scores to fit their covariance, got shape {s.shape}")
        cov = np.atleast_2d(np.cov(z, rowvar=False)) + ridge * np.eye(z.shape[1])
        return cls(mid, scale, np.linalg.inv(cov))

    def standardised(self, scores) -> np.ndarray:
        """(N, S) scores minus their training medians, over their interquartile ranges."""
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] != len(self.center):
            raise DataError(f"need (N, {len(self.center)}) scores, got shape {s.shape}")
        return (s - self.center) / self.scale

    def score(self, scores) -> np.ndarray:
        z = self.standardised(scores)
        if self.precision is None:
            return z.mean(1)
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, self.precision, z), 0.0))


# ---- how well a score separates inliers (label 0) from outliers (label 1) -------------------
def _labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"{len(y)} labels but {len(s)} scores")
    if not set(np.unique(y)) <= {0, 1} or len(np.unique(y)) != 2:
        raise DataError("labels must contain both 0 (inlier) and 1 (outlier), and nothing else")
    if not np.isfinite(s).all():
        raise DataError("scores contain NaN or infinite values")
    return y, s


def auroc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(*_labels_scores(labels, scores)))


def auprc(labels, scores) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(*_labels_scores(labels, scores)))


def fpr_at_tpr(labels, scores, tpr: float = 0.95) -> float:
    """The share of inliers flagged when the threshold catches ``tpr`` of the outliers."""
    y, s = _labels_scores(labels, scores)
    if not 0 < tpr <= 1:
        raise ConfigError(f"tpr must lie in (0, 1], got {tpr}")
    out = np.sort(s[y == 1])
    threshold = out[int(np.floor(len(out) * (1 - tpr) + 1e-9))]   # the highest one that still catches tpr
    return float(np.mean(s[y == 0] >= threshold))


def separation(labels, scores) -> dict[str, float]:
    return {"auroc": auroc(labels, scores), "auprc": auprc(labels, scores), "fpr95": fpr_at_tpr(labels, scores)}


def _same_length(a, b, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise DataError(f"{name_a} has {len(a)} values but {name_b} {len(b)}")
    return a, b
