"""A generative classifier that can say "I have not seen this": Bayes' rule over a
class-conditional model, with a reject option.

    log p(x | y)   for every class y: the CVAE's importance-sampled estimate (Burda et al.
                   2016, the evaluation layer's estimator, the same draws for every class), or
                   a class-conditional gated PixelCNN's exact log-likelihood
    p(y | x)     = p(x | y) p(y) / p(x),     p(x) = sum_y p(x | y) p(y)

An input is predicted argmax_y p(y | x), and rejected when its score -log p(x) (nats) — or
the complexity-corrected score of Serrà et al. 2020, NLL in bits minus PNG's code length; or
orientation, the NLL minus that of the likelier mirror image; or combined, the largest of the
three standardised on the held-out inliers — lies above a threshold set on in-distribution held-out data so that a target fraction (the
coverage) is kept. A discriminative classifier has no p(x): it must label every input.

    class_log_likelihoods   (N, C) log p(x | y) of batches, nats
    bayes_posterior         (posterior (N, C), log p(x) (N,)) from them and log p(y)
    coverage_threshold      the score threshold that keeps a fraction of held-out inputs
    selective_accuracy      accuracy of the kept inputs at each coverage
    classify_run            the task behind `zspace classify RUN --data ...`
    GenerativeClassifier    the scikit-learn façade (fit, predict, predict_proba,
                            decision_function, accept / predict_or_reject at a coverage)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder, MinMaxScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from .data.dataset import ArrayData, DataSplits, Subset
from .data.transforms import Preprocessing
from .detect import _row_noise
from .errors import ConfigError, DataError
from .evaluation.likelihood import importance_sampled_log_likelihood
from .evaluation.outliers import ScoreCombination, complexity_corrected, png_bits
from .models.capabilities import Conditional, ExactLikelihood, ImportanceSampledLikelihood
from .models.vae import CVAE, CVAEConfig
from .rng import seeded
from .training.config import TrainConfig
from .training.trainer import Trainer

SCORES = ("nll", "complexity", "orientation", "combined")
MEMBERS = ("nll", "complexity", "orientation")   # what "combined" takes the largest of, each standardised


def check_generative_classifier(model) -> None:
    """A class-conditional model with a likelihood: what Bayes' rule needs."""
    who = model.describe() if hasattr(model, "describe") else type(model).__name__
    if not isinstance(model, Conditional):
        raise ConfigError(f"{who} is not class-conditional: the generative classifier needs p(x | y) "
                          f"for every class (train a cvae, or a gated-pixelcnn with --num-classes)")
    if not isinstance(model, (ExactLikelihood, ImportanceSampledLikelihood)):
        raise ConfigError(f"{who} has no likelihood p(x | y) to compare classes with")


def check_coverage(coverage) -> float:
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not 0 < coverage <= 1:
        raise ConfigError(f"coverage must lie in (0, 1], got {coverage!r}")
    return float(coverage)


@torch.no_grad()
def class_log_likelihoods(model, batches: Iterable, num_samples: int = 100, seed: int = 0,
                          noise=None) -> tuple[np.ndarray, np.ndarray | None]:
    """(log p(x | y) for every class, (N, C) float64 nats; the batches' labels (N,) or None).

    The importance-sampled estimate draws its standard-normal noise (k, B, latent_dim) once per
    batch — from the seeded global RNG, or ``noise(batch)`` — and uses it for every class
    (common random numbers: the classes are compared on the same draws).
    """
    check_generative_classifier(model)
    exact = isinstance(model, ExactLikelihood)
    classes = model.num_classes
    out, labels = [], []
    model.eval()
    with seeded(seed):
        for b in batches:
            x = b.x
            eps = None if exact else (torch.randn(num_samples, len(x), model.config.latent_dim)
                                      if noise is None else noise(b))
            cols = []
            for c in range(classes):
                y = torch.full((len(x),), c, dtype=torch.long)
                cols.append(model.log_prob(x, y).double() if exact
                            else importance_sampled_log_likelihood(model, x, num_samples, y=y, eps=eps))
            out.append(torch.stack(cols, 1).cpu().numpy())
            labels.append(None if b.y is None else b.y.numpy())
    if not out:
        raise DataError("no examples to classify")
    y = None if any(v is None for v in labels) else np.concatenate(labels)
    return np.concatenate(out), y


def bayes_posterior(log_px_given_y, log_prior) -> tuple[np.ndarray, np.ndarray]:
    """(p(y | x) (N, C), log p(x) (N,)) from log p(x | y) (N, C) and log p(y) (C,), in nats."""
    lp = np.asarray(log_px_given_y, dtype=np.float64)
    prior = np.asarray(log_prior, dtype=np.float64)
    if lp.ndim != 2 or prior.shape != (lp.shape[1],):
        raise DataError(f"need log p(x|y) (N, C) and log p(y) (C,), got {lp.shape} and {prior.shape}")
    joint = lp + prior
    top = joint.max(1, keepdims=True)
    log_px = top[:, 0] + np.log(np.exp(joint - top).sum(1))
    return np.exp(joint - log_px[:, None]), log_px


def log_class_prior(labels, num_classes: int) -> np.ndarray:
    """log p(y) from training labels' frequencies (each class counted at least once)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes] + 1.0
    return np.log(counts / counts.sum())


def rejection_scores(log_px, images=None, score: str = "nll", log_px_flipped=None) -> np.ndarray:
    """Higher = less like the training data: -log p(x) in nats; (``complexity``) the NLL in
    bits minus the images' PNG code length in bits (Serrà et al. 2020); (``orientation``) the
    NLL minus the lower NLL of the image's mirror images, ``log_px_flipped`` (N,) the larger of
    their log p(x) (see zspace.image_detect). ``combined`` needs reference scores: see
    :class:`CombinedRejection`."""
    if score not in MEMBERS:
        raise ConfigError(f"unknown rejection score {score!r}; choose one of {', '.join(MEMBERS)}"
                          + (" (combined: CombinedRejection)" if score == "combined" else ""))
    nll = -np.asarray(log_px, dtype=np.float64)
    if score == "nll":
        return nll
    if score == "orientation":
        if log_px_flipped is None:
            raise ConfigError("the orientation score needs the log p(x) of the mirrored images")
        return nll + np.asarray(log_px_flipped, dtype=np.float64)
    if images is None:
        raise ConfigError("the complexity-corrected score needs the images (for their PNG code length)")
    return complexity_corrected(nll, png_bits(images))


class CombinedRejection:
    """The largest of the member scores (NLL, complexity-corrected, orientation), each
    standardised by its median and interquartile range on reference inliers (held-out
    examples of the training distribution): an input is rejected when any one of them says it
    is far out, as the image detector's default does."""

    def __init__(self, reference: dict[str, np.ndarray]):
        self.combination = ScoreCombination.fit(np.column_stack([reference[m] for m in MEMBERS]), "mean")

    def score(self, members: dict[str, np.ndarray]) -> np.ndarray:
        return self.combination.standardised(np.column_stack([members[m] for m in MEMBERS])).max(1)


def coverage_threshold(scores, coverage: float) -> float:
    """The threshold t such that inputs with score <= t are kept: ceil(coverage * n) of these
    held-out scores are (t = +inf at coverage 1)."""
    coverage = check_coverage(coverage)
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.ndim != 1 or len(s) == 0 or not np.isfinite(s).all():
        raise DataError("need a non-empty set of finite held-out scores to set the threshold")
    if coverage == 1:
        return math.inf
    return float(s[max(0, math.ceil(coverage * len(s)) - 1)])


def selective_accuracy(correct, scores, coverages=(1.0, 0.95, 0.9, 0.8, 0.7, 0.5)) -> list[tuple[float, float]]:
    """(coverage, accuracy of the kept inputs) keeping the lowest-score fraction of each size."""
    correct = np.asarray(correct, dtype=bool)
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    out = []
    for c in coverages:
        k = max(1, math.ceil(check_coverage(c) * len(order)))
        out.append((float(c), float(correct[order[:k]].mean())))
    return out


# ---- the task ------------------------------------------------------------------------------
@dataclass
class Classification:
    run: str
    data: str
    estimator: str                    # "exact" or "importance-sampled, k=..."
    score: str
    coverage: float
    threshold: float
    num_examples: int
    calibration_examples: int
    accepted: float                   # fraction of the examples kept
    accuracy: float | None            # on all examples (labels given)
    selective_accuracy: float | None  # on the kept ones
    curve: list = field(default_factory=list)   # (coverage, accuracy) ranked by the score
    predictions: np.ndarray | None = None
    kept: np.ndarray | None = None

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("predictions", "kept")}
        out["threshold"] = None if math.isinf(self.threshold) else self.threshold
        return out

    def lines(self) -> list[str]:
        out = [f"{self.num_examples} examples of {self.data}, {self.run} ({self.estimator} log p(x|y))",
               f"reject when the {self.score} score > {self.threshold:.4g} (coverage {self.coverage:g} on "
               f"{self.calibration_examples} held-out examples of the run's test split): kept {100 * self.accepted:.1f}%"]
        if self.accuracy is not None:
            out.append(f"accuracy {100 * self.accuracy:.2f}% on all, "
                       + (f"{100 * self.selective_accuracy:.2f}% on the kept" if self.selective_accuracy is not None
                          else "none kept"))
            out.append("selective accuracy: " + ", ".join(f"{100 * c:g}% -> {100 * a:.2f}%" for c, a in self.curve))
        return out


def write_classification(res: Classification, json_path=None, csv_path=None) -> list[str]:
    """The summary as JSON and/or one CSV row per example (index, predicted label, kept 0/1),
    both written atomically; returns the paths written."""
    from .core.io import write_json_atomic, write_text_atomic

    written = []
    if json_path is not None:
        write_json_atomic(json_path, res.as_dict())
        written.append(str(json_path))
    if csv_path is not None:
        rows = "".join(f"{i},{int(p)},{int(k)}\n" for i, (p, k) in enumerate(zip(res.predictions, res.kept)))
        write_text_atomic(csv_path, "index,label,kept\n" + rows)
        written.append(str(csv_path))
    return written


def seen_images(x: torch.Tensor) -> np.ndarray:
    """A batch as the model saw it (binarized, scaled or 8-bit levels) as images for PNG: uint8
    levels, or floats in [0, 1]."""
    x = x.detach().cpu()
    return x.clamp(0, 255).to(torch.uint8).numpy() if not x.is_floating_point() else x.clamp(0, 1).numpy()


def member_scores(model, batches, num_samples: int, seed: int, log_prior: np.ndarray,
                  members=MEMBERS) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """(p(y | x) (N, C), the labels or None, {member: (N,) rejection score}) for batches of a
    class-conditional image model. Complexity is of what the model scored (the preprocessed
    batch); orientation flips that batch left-right and upside down and scores both, with the
    same draws as the batch itself."""
    if "orientation" in members:     # scored three times: kept (otherwise the batches stream)
        batches = list(batches)
        if any(b.x.dim() != 4 for b in batches):
            raise ConfigError("the orientation score needs images (C, H, W) to mirror")
    seen = []

    def recorded():
        for b in batches:
            if "complexity" in members:
                seen.append(seen_images(b.x))
            yield b

    lp, y = class_log_likelihoods(model, recorded(), num_samples, seed)
    post, log_px = bayes_posterior(lp, log_prior)
    out, flipped = {}, None
    if "orientation" in members:
        flipped = np.maximum(*(bayes_posterior(class_log_likelihoods(
            model, [dataclasses.replace(b, x=b.x.flip(dim)) for b in batches], num_samples, seed)[0],
            log_prior)[1] for dim in (-1, -2)))
    seen = np.concatenate(seen) if seen else None
    for m in members:
        out[m] = rejection_scores(log_px, seen, m, flipped)
    return post, y, out


def _scores_of(run, loader, num_samples: int, seed: int, score: str, log_prior: np.ndarray, combined=None):
    members = MEMBERS if score == "combined" else (score,)
    post, y, s = member_scores(run.model, loader.epoch(0), num_samples, seed, log_prior, members)
    if score != "combined":
        return post, y, s[score], None
    combined = combined or CombinedRejection(s)
    return post, y, combined.score(s), combined


def classify_run(run, data=None, *, split: str = "test", limit: int | None = None, num_samples: int = 100,
                 coverage: float = 1.0, score: str = "nll", calibrate: int = 1000, batch_size: int = 100,
                 seed: int = 0) -> Classification:
    """Labels (or rejects) ``data``'s split (default: the run's own) with a run's class-conditional
    model. The threshold is set on the first ``calibrate`` examples of the run's own test split;
    when ``data`` is the run's own, the classified examples start after them."""
    from .data.sources import load_dataset

    check_generative_classifier(run.model)
    coverage = check_coverage(coverage)
    if score not in SCORES:
        raise ConfigError(f"unknown rejection score {score!r}; choose one of {', '.join(SCORES)}")
    for name, v in (("num_samples", num_samples), ("calibrate", calibrate), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
    own = run.data()
    train_y = own.train.y
    k = run.model.num_classes
    log_prior = log_class_prior(train_y, k) if train_y is not None else np.full(k, -math.log(k))
    cal_loader = run.loader("test", batch_size, limit=calibrate)
    _, _, cal_scores, combined = _scores_of(run, cal_loader, num_samples, seed, score, log_prior)
    threshold = coverage_threshold(cal_scores, coverage)
    same = data is None
    splits = own if same else load_dataset(data)
    part = splits.split(split)
    if same and split == "test":     # the calibration examples are not classified again
        part = Subset(part, np.arange(min(calibrate, len(part)), len(part)))
    if len(part) == 0:
        raise DataError(f"{splits.name}: no {split} examples left to classify after the {calibrate} held out")
    loader = run.loader(split, batch_size, limit=limit, data=_with_split(splits, split, part))
    post, y, scores, _ = _scores_of(run, loader, num_samples, seed + 1, score, log_prior, combined)
    pred = post.argmax(1)
    kept = scores <= threshold
    acc = sel = None
    curve = []
    if y is not None:
        correct = pred == y
        acc = float(correct.mean())
        sel = float(correct[kept].mean()) if kept.any() else None
        curve = selective_accuracy(correct, scores)
    est = "exact" if isinstance(run.model, ExactLikelihood) else f"importance-sampled, k={num_samples}"
    return Classification(run=str(run.path), data=splits.name if not same else f"{splits.name} (the run's own)",
                          estimator=est, score=score, coverage=coverage, threshold=threshold,
                          num_examples=len(pred), calibration_examples=len(cal_scores), accepted=float(kept.mean()),
                          accuracy=acc, selective_accuracy=sel, curve=curve, predictions=pred, kept=kept)


def _with_split(splits, split: str, part) -> DataSplits:
    """``splits`` with its ``split`` replaced by ``part`` (for Run.loader's data=)."""
    if split not in ("train", "test"):
        return DataSplits(part, part, name=splits.name)
    return dataclasses.replace(splits, **{split: part})


# ---- the scikit-learn façade -------------------------------------------------------------
class GenerativeClassifier(ClassifierMixin, BaseEstimator):
    """A conditional VAE as a classifier with a reject option (see the module docstring).

    Features are min-max scaled to [0, 1] on the training data and modelled by the decoder's
    ``likelihood`` (default a Gaussian with learned variance: a density, so classes differ by
    more than a Bernoulli's flat cross-entropy on continuous values allows).
    ``coverage`` < 1 holds out ``calibration_fraction`` of the training rows (stratified by
    nothing: the first rows of a seeded permutation) and sets the threshold on -log p(x) that
    keeps that fraction of them; ``accept(X)`` then says which rows are kept and
    ``predict_or_reject(X)`` labels the rest ``reject_label``. ``predict`` always labels
    every row (the scikit-learn contract).
    """

    def __init__(self, latent_dim=8, *, hidden=(128,), likelihood="gaussian-learned", epochs=30, batch_size=64,
                 lr=3e-3, num_samples=32, coverage=1.0, calibration_fraction=0.2, random_state=None):
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.num_samples = num_samples
        self.coverage = coverage
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    def _check_params(self) -> None:
        try:
            check_coverage(self.coverage)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if not 0 < self.calibration_fraction < 1:
            raise ValueError(f"calibration_fraction must lie in (0, 1), got {self.calibration_fraction!r}")
        for name in ("latent_dim", "epochs", "batch_size", "num_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")

    def fit(self, X, y):
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float32, ensure_min_samples=2)
        check_classification_targets(y)
        self.label_encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.label_encoder_.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"the classifier needs at least two classes in y, got one class: {self.classes_[0]!r}")
        codes = self.label_encoder_.transform(y)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(0, 2**31 - 1))
        held = np.zeros(len(X), dtype=bool)
        if self.coverage < 1:
            n_cal = max(1, int(round(self.calibration_fraction * len(X))))
            held[rng.permutation(len(X))[:n_cal]] = True
            if held.all() or (~held).sum() < 2:
                raise ValueError("too few rows to hold some out for the reject threshold")
        self.scaler_ = MinMaxScaler().fit(X[~held])
        xs = np.clip(self.scaler_.transform(X), 0, 1).astype(np.float32)
        k = len(self.classes_)
        try:
            config = CVAEConfig(input_shape=(X.shape[1],), latent_dim=int(self.latent_dim), hidden=tuple(self.hidden),
                                likelihood=self.likelihood, num_classes=k)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        fit_rows = ~held
        train_config = TrainConfig(epochs=int(self.epochs), batch_size=int(min(self.batch_size, fit_rows.sum())),
                                   lr=self.lr, seed=seed)
        data = ArrayData.from_arrays(xs[fit_rows], codes[fit_rows])
        with seeded(seed):
            model = CVAE(config)
            Trainer(model, data, None, Preprocessing("none"), train_config, progress=False).fit()
        # float64 at prediction: a row's answer then does not move with the batch it shares (BLAS paths)
        self.model_ = model.double().eval()
        self.log_prior_ = log_class_prior(codes[fit_rows], k)
        self._seed = seed
        self.threshold_ = math.inf
        if held.any():
            self.threshold_ = coverage_threshold(self._nll(xs[held].astype(np.float64)), self.coverage)
        return self

    def _log_likelihoods(self, xs: np.ndarray) -> np.ndarray:
        from .data.loader import Batch

        batches = (Batch(torch.from_numpy(xs[i:i + 256]), None, np.arange(i, min(i + 256, len(xs))))
                   for i in range(0, len(xs), 256))
        k, dim = int(self.num_samples), int(self.latent_dim)
        # each row's draws fixed by its bytes: a row's answer does not depend on its neighbours
        return class_log_likelihoods(self.model_, batches, k, self._seed,
                                     noise=lambda b: _row_noise(b.x.numpy(), k, dim, self._seed))[0]

    def _nll(self, xs: np.ndarray) -> np.ndarray:
        return -bayes_posterior(self._log_likelihoods(xs), self.log_prior_)[1]

    def _scaled(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return np.clip(self.scaler_.transform(X), 0, 1).astype(np.float64)

    def _posterior(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(p(y | x) (n, n_classes), log p(x) (n,) nats on the scaled features)."""
        check_is_fitted(self)
        return bayes_posterior(self._log_likelihoods(self._scaled(X)), self.log_prior_)

    def decision_function(self, X) -> np.ndarray:
        """log p(y | x) per class (n, n_classes); for two classes log p(y1|x) - log p(y0|x), (n,)."""
        with np.errstate(divide="ignore"):
            log_post = np.log(self._posterior(X)[0])
        return log_post[:, 1] - log_post[:, 0] if len(self.classes_) == 2 else log_post

    def predict_proba(self, X) -> np.ndarray:
        return self._posterior(X)[0]

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.classes_[np.argmax(self._posterior(X)[0], axis=1)]

    def score_samples(self, X) -> np.ndarray:
        """log p(x) = log sum_y p(x | y) p(y), (n,) nats (on the min-max scaled features)."""
        return self._posterior(X)[1]

    def accept(self, X) -> np.ndarray:
        """True for the rows the reject option keeps (-log p(x) <= threshold_), (n,)."""
        return -self.score_samples(X) <= self.threshold_

    def predict_or_reject(self, X, reject_label=-1) -> np.ndarray:
        """``predict``, with ``reject_label`` for the rows ``accept`` turns away (an object array)."""
        check_is_fitted(self)
        post, log_px = self._posterior(X)
        out = self.classes_[np.argmax(post, axis=1)].astype(object)
        out[-log_px > self.threshold_] = reject_label
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
