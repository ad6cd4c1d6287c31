"""Outlier detectors with the scikit-learn contract PyOD users expect.

    det = VAEOutlierDetector(contamination=0.05).fit(X_train)   # (n_samples, n_features)
    det.decision_function(X)   # higher = more abnormal (PyOD's convention)
    det.score_samples(X)       # its negative: higher = more normal (scikit-learn's convention)
    det.predict(X)             # 1 = outlier, 0 = inlier (PyOD's convention)
    det.threshold_, det.decision_scores_ (the training data's scores)

Features are scaled on the training data: "power" (the VAE's default) is Yeo-Johnson
then standardisation, "quantile" maps each feature's marginal to a standard normal,
"standard" (the autoencoder's) standardises, "minmax" suits data in a known range such
as pixels, "none" leaves them. Likelihood scores add the scaling's log-Jacobian, so they
are -log p(x) of the features as given, whatever the scaling. Few epochs by
default (20): the training rows of an unsupervised detector contain the outliers too, and
a model trained longer learns them (measured on the ODDS sets, benchmarks/RESULTS.md). ``GenerativeOutlierDetector`` wraps any
zspace model family ('ae', 'vae') with any ``score_type`` below; the two named detectors are its
defaults for autoencoders and VAEs.

Scores (evaluation/outliers.py): "reconstruction" (mean squared error), "elbo" (negative
ELBO), "nll" (importance-sampled negative log-likelihood), "typicality" (|NLL - mean
training NLL|), "mahalanobis" (of the code under a Gaussian fitted to the training codes),
"isolation" (an isolation forest on the rows as given, Liu et al. 2008: no model needed). A
tuple of them is one score: each standardised by its training median and IQR, then averaged.
The VAE detector's default is ("nll", "isolation").

Unlike PyOD's VAE, whose defaults (``beta=1``, ``capacity=0``) clamp its KL term to
zero so it trains as an autoencoder with a noisy code (docs/outliers.md), ours is the VAE
of the likelihood literature: full closed-form KL and a Gaussian decoder with fixed unit
variance on scaled features, so the "nll" score estimates -log p(x) in nats (of the
features as given: the scaling's log-Jacobian is part of it).

Monte-Carlo scores are made deterministic per row: each row's posterior samples come
from a generator seeded by the detector's seed and the row's bytes, so a row scores
the same whatever batch, order or subset it arrives in (scikit-learn checks this).
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from .core.compute import resolve_device, small_fit_threads
from .core.progress import Progress, is_enabled
from .data.dataset import ArrayData
from .data.transforms import Preprocessing
from .errors import ConfigError
from .evaluation.likelihood import importance_sampled_log_likelihood
from .evaluation.outliers import IsolationScores, LatentGaussian, ScoreCombination
from .models.base import build_model
from .rng import seeded
from .training.config import TrainConfig
from .training.trainer import Trainer

SCORES = ("reconstruction", "elbo", "nll", "typicality", "mahalanobis", "isolation")
SCALINGS = ("standard", "power", "quantile", "minmax", "none")
_NEEDS_POSTERIOR = ("elbo", "nll", "typicality")
# epochs="auto": at least 20 epochs and about AUTO_STEPS optimiser steps (small tables get more
# epochs, so a 100-row table is not left with 20 steps), at most AUTO_MAX_EPOCHS
AUTO_STEPS, AUTO_MAX_EPOCHS = 500, 500


def auto_epochs(n_rows: int, batch_size: int) -> int:
    """The epochs ``epochs="auto"`` trains for on ``n_rows`` rows in batches of ``batch_size``."""
    steps_per_epoch = -(-n_rows // max(1, min(batch_size, n_rows)))
    return int(min(AUTO_MAX_EPOCHS, max(20, -(-AUTO_STEPS // steps_per_epoch))))


def score_members(score_type) -> tuple[str, ...]:
    """The scores a ``score_type`` is made of: one name, or a tuple combined (ScoreCombination)."""
    return (score_type,) if isinstance(score_type, str) else tuple(score_type)


class GenerativeOutlierDetector(BaseEstimator):
    """Any zspace model ('ae' or 'vae') trained on the inliers-to-be, scored by ``score_type``."""

    def __init__(self, model="vae", score_type="nll", *, latent_dim=None, hidden=(64, 32), activation="relu",
                 epochs=20, batch_size=128, lr=1e-3, num_samples=64, scaling="power",
                 contamination=0.1, random_state=None, threads=None, device="cpu"):
        self.model = model
        self.score_type = score_type
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.activation = activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.num_samples = num_samples
        self.scaling = scaling
        self.contamination = contamination
        self.random_state = random_state
        self.threads = threads   # torch threads of the fit (None: one for small data, else min(cores, 4))
        self.device = device     # where the model trains and scores: cpu, cuda or cuda:N

    # ---- parameters ------------------------------------------------------------------------
    def _check_params(self, n_features: int) -> int:
        if self.model not in ("ae", "vae"):
            raise ConfigError(f"model must be 'ae' or 'vae', got {self.model!r}")
        try:
            members = score_members(self.score_type)
        except TypeError:
            members = ()
        if not all(isinstance(m, str) for m in members):   # a list inside the tuple, say
            members = ()
        if not members or len(set(members)) != len(members):
            raise ConfigError(f"score_type must be a score or a tuple of distinct scores, got {self.score_type!r}")
        for m in members:
            if m not in SCORES:
                raise ConfigError(f"unknown score {m!r}; choose one of {', '.join(SCORES)}")
            if self.model == "ae" and m in _NEEDS_POSTERIOR:
                raise ConfigError(f"score {m!r} needs a likelihood: use model='vae'")
        e = self.epochs
        if e != "auto" and (isinstance(e, bool) or not isinstance(e, int) or e < 1):
            raise ConfigError(f"epochs must be an integer >= 1 or 'auto', got {e!r}")
        if self.scaling not in SCALINGS:
            raise ConfigError(f"scaling must be one of {', '.join(SCALINGS)}, got {self.scaling!r}")
        c = self.contamination
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c <= 0.5:
            raise ConfigError(f"contamination must lie in (0, 0.5], got {c!r}")
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ConfigError(f"num_samples must be an integer >= 1, got {self.num_samples!r}")
        resolve_device(self.device)    # a name torch knows, on hardware this machine has
        d = self.latent_dim if self.latent_dim is not None else max(1, min(8, n_features // 2))
        return d

    def _model_options(self, n_features: int, latent_dim: int) -> dict:
        opts = dict(input_shape=(n_features,), latent_dim=latent_dim, hidden=tuple(self.hidden),
                    activation=self.activation)
        if self.model == "vae":
            # unit-variance Gaussian on standardised features; Bernoulli on [0, 1] data
            opts["likelihood"] = "bernoulli" if self.scaling == "minmax" else "gaussian-fixed"
        else:
            opts["output_activation"] = "sigmoid" if self.scaling == "minmax" else "none"
        return opts

    # ---- fitting -----------------------------------------------------------------------------
    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float32, ensure_min_samples=2)
        latent_dim = self._check_params(X.shape[1])
        self.scaler_ = _Scaling.fit(self.scaling, X)
        xs = self._scale(X)
        self.seed_ = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        self.epochs_ = auto_epochs(len(X), self.batch_size) if self.epochs == "auto" else self.epochs
        config = TrainConfig(epochs=self.epochs_, batch_size=min(self.batch_size, len(X)), lr=self.lr,
                             seed=self.seed_, threads=small_fit_threads(X.size, self.threads), device=str(self.device))
        with seeded(self.seed_):
            model = build_model(self.model, self._model_options(X.shape[1], latent_dim), copies=4)
            Trainer(model, ArrayData.from_arrays(xs), None, Preprocessing("none"), config,
                    progress=is_enabled()).fit()   # the CLI's bar; silent in a library call
        self.model_ = model.eval()
        return self._fit_score(X)

    def rescore(self, score_type, X) -> "GenerativeOutlierDetector":
        """Switches a fitted detector to another ``score_type`` without retraining its model:
        the new score's statistics and threshold are fitted on X, the training rows."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        self.set_params(score_type=score_type)
        self._check_params(X.shape[1])
        return self._fit_score(X)

    def _fit_score(self, X: np.ndarray) -> "GenerativeOutlierDetector":
        """The score's training statistics (latent Gaussian, typical NLL, combination), threshold."""
        members = score_members(self.score_type)
        self.latent_ = self.typical_nll_ = self.combination_ = self.isolation_ = None
        if "isolation" in members:
            self.isolation_ = IsolationScores.fit(X, seed=self.seed_)
        if "mahalanobis" in members:      # refuses fewer rows than latent dimensions, clearly
            self.latent_ = LatentGaussian(self._codes(self._scale64(X)))
        if "typicality" in members:
            self.typical_nll_ = float(np.mean(self._raw_scores(X, "nll")))
        if len(members) > 1:
            self.combination_ = ScoreCombination.fit(self._member_scores(X, members))
        self.decision_scores_ = self._scores(X)
        self.threshold_ = float(np.quantile(self.decision_scores_, 1 - self.contamination))
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    # ---- scoring -----------------------------------------------------------------------------
    def decision_function(self, X) -> np.ndarray:
        """Outlier scores, higher = more abnormal."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return self._scores(X)

    def score_samples(self, X) -> np.ndarray:
        """scikit-learn's convention: higher = more normal (the negated decision function)."""
        return -self.decision_function(X)

    def predict(self, X) -> np.ndarray:
        """1 for outliers (score above ``threshold_``), 0 for inliers."""
        return (self.decision_function(X) > self.threshold_).astype(int)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return self.scaler_.transform(X)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        """Scores of raw rows X (the rows' bytes also key their Monte-Carlo noise)."""
        members = score_members(self.score_type)
        if len(members) == 1:
            return self._member_scores(X, members)[:, 0]
        return self.combination_.score(self._member_scores(X, members))

    def _member_scores(self, X: np.ndarray, members: tuple[str, ...]) -> np.ndarray:
        """(N, len(members)) scores; the NLL is computed once when typicality needs it too."""
        cache: dict[str, np.ndarray] = {}

        def raw(name):
            if name not in cache:
                cache[name] = self._raw_scores(X, name)
            return cache[name]
        cols = []
        for m in members:
            if m == "mahalanobis":
                cols.append(self.latent_.score(self._codes(self._scale64(X))))
            elif m == "typicality":
                cols.append(np.abs(raw("nll") - self.typical_nll_))
            elif m == "isolation":
                cols.append(self.isolation_.score(X))
            else:
                cols.append(raw(m))
        return np.column_stack(cols)

    # Scores are computed in float64 (a float64 copy of the trained model): float32 matrix
    # products round differently for different batch sizes, and a combined score divides by
    # small training spreads, so float32 would make a row's score depend on its batch.
    def _scale64(self, X: np.ndarray) -> np.ndarray:
        return self.scaler_._map(np.asarray(X, dtype=np.float64))

    def _scorer(self):
        """The float64 copy of the model, on ``device`` (rows are moved there, scores come back)."""
        dev = resolve_device(self.device)
        cached = getattr(self, "_model64", None)
        if cached is None or cached[0] is not self.model_ or cached[2] != dev:
            cached = (self.model_, copy.deepcopy(self.model_).double().to(dev).eval(), dev)
            self._model64 = cached
        return cached[1]

    @torch.no_grad()
    def _codes(self, xs: np.ndarray) -> np.ndarray:
        model = self._scorer()
        dev = next(model.parameters()).device
        return np.concatenate([model.embed(torch.from_numpy(b).to(dev)).cpu().numpy() for b in _chunks(xs, 4096)])

    @torch.no_grad()
    def _raw_scores(self, X: np.ndarray, score: str) -> np.ndarray:
        out = []
        model = self._scorer()
        dev = next(model.parameters()).device
        bar = Progress(len(X), f"detect: {score} scores", "rows")   # shown by the CLI (core.progress)
        for b in _chunks(X, 1024):
            bar.update(len(b))
            x = torch.from_numpy(self._scale64(b)).to(dev)
            if score == "reconstruction":
                out.append(((model.reconstruct(x) - x) ** 2).mean(1).cpu().numpy())
                continue
            q = model.encode(x)
            # -log p(x) of the features as given: the scaled features' NLL minus log|dT/dx|
            jacobian = self.scaler_.log_jacobian(b)
            if score == "elbo":      # one posterior sample, closed-form KL
                z = q.mean + q.std * _row_noise(b, 1, q.mean.shape[1], self.seed_)[0].double().to(dev)
                out.append((q.kl_standard_normal() - model.decode(z).log_prob(x)).cpu().numpy() - jacobian)
                continue
            k = self.num_samples
            eps = _row_noise(b, k, q.mean.shape[1], self.seed_).double().to(dev)         # (k, B, D), drawn on the CPU
            ll = importance_sampled_log_likelihood(model, x, k, eps=eps, posterior=q)
            out.append(-ll.cpu().numpy() - jacobian)
        bar.close()
        return np.concatenate(out)


class AutoencoderOutlierDetector(GenerativeOutlierDetector):
    """An autoencoder scored by reconstruction error (the PyOD AutoEncoder's recipe)."""

    model = "ae"   # fixed: a class attribute, not a parameter

    def __init__(self, score_type="reconstruction", *, latent_dim=None, hidden=(64, 32), activation="relu",
                 epochs=20, batch_size=128, lr=1e-3, num_samples=64, scaling="standard",
                 contamination=0.1, random_state=None, threads=None, device="cpu"):
        _store(self, locals())


class VAEOutlierDetector(GenerativeOutlierDetector):
    """A VAE scored by its importance-sampled negative log-likelihood combined with an isolation
    forest on the same rows (or any score above). The default was chosen leave-sets-out on 22
    tables (benchmarks/outliers_tabular.py): the NLL alone and IsolationForest alone are about
    equal on average and fail on different sets; their combination beats both."""

    model = "vae"

    def __init__(self, score_type=("nll", "isolation"), *, latent_dim=None, hidden=(64, 32), activation="relu",
                 epochs=20, batch_size=128, lr=1e-3, num_samples=64, scaling="power",
                 contamination=0.1, random_state=None, threads=None, device="cpu"):
        _store(self, locals())


def _store(estimator, params: dict) -> None:
    """scikit-learn's contract: __init__ stores its arguments unchanged, nothing else."""
    for name, value in params.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


def _chunks(x: np.ndarray, size: int):
    for i in range(0, len(x), size):
        yield x[i:i + size]


def _row_noise(rows: np.ndarray, k: int, dim: int, seed: int) -> torch.Tensor:
    """(k, B, dim) standard normal draws, each row's fixed by (seed, the row's bytes)."""
    eps = torch.empty(k, len(rows), dim)
    g = torch.Generator()
    for i, row in enumerate(rows):
        digest = hashlib.blake2b(row.tobytes(), digest_size=8, key=seed.to_bytes(8, "little")).digest()
        g.manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
        eps[:, i] = torch.randn(k, dim, generator=g)
    return eps


# ---- saving and loading (no pickle: JSON + safetensors) -------------------------------------
DETECTOR_FILE = "detector.json"
_CLASSES = {c.__name__: c for c in (GenerativeOutlierDetector, AutoencoderOutlierDetector, VAEOutlierDetector)}


def detector_rows(source, split: str = "all", label_column=None, detector=None):
    """(x, y): a data source's rows as float32 features (images flattened, 8-bit scaled to [0, 1])
    and its labels. With a fitted ``detector`` and no ``label_column``, the label column given
    at fit (kept in the saved detector) is left out of the features when the file has it."""
    from .data import load_dataset
    from .errors import DataError

    def rows(column):
        part = load_dataset(source, label_column=column).split(split)
        x = part.x.reshape(len(part), -1)
        return (x.astype(np.float32) / 255.0 if part.is_8bit else x.astype(np.float32)), part.y

    remembered = getattr(detector, "label_column_", None)
    if label_column is None and remembered is not None:
        try:
            x, y = rows(remembered)
            if x.shape[1] == detector.n_features_in_:
                return x, y
        except DataError:   # no such column: rows without labels, scored as they are
            pass
    return rows(label_column)


def write_detector_folder(path, meta: dict, models: dict, arrays: dict) -> Path:
    """A detector folder: DETECTOR_FILE (``meta``), NAME.safetensors per model, fitted.safetensors
    (``arrays``: NumPy arrays), written atomically; an existing folder that is not a detector is refused."""
    import json

    from safetensors.torch import save_file

    from .core.io import write_folder_atomic

    path = Path(path)
    if path.exists() and not (path / DETECTOR_FILE).is_file():
        raise ConfigError(f"{path} exists and is not a saved detector; choose another folder")
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}

    def fill(tmp: Path) -> None:
        for name, model in models.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                      str(tmp / f"{name}.safetensors"))
        save_file(tensors, str(tmp / "fitted.safetensors"))
        (tmp / DETECTOR_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    write_folder_atomic(path, fill)
    return path


def save_detector(det, path, label_column=None) -> Path:
    """Writes a fitted detector (tabular or image) to the folder ``path`` (replaced atomically);
    ``label_column``, the CSV column left out of a table's features, is kept for scoring."""
    if not isinstance(det, GenerativeOutlierDetector):
        from .image_detect import save_image_detector

        return save_image_detector(det, path)
    check_is_fitted(det)
    arrays = {"decision_scores": np.asarray(det.decision_scores_, dtype=np.float64)}
    arrays.update({f"scaler_{k}": v for k, v in det.scaler_.arrays.items()})
    if getattr(det, "latent_", None) is not None:
        arrays.update(latent_mean=det.latent_.mean, latent_precision=det.latent_.precision)
    if getattr(det, "combination_", None) is not None:
        arrays.update(combination_center=det.combination_.center, combination_scale=det.combination_.scale)
    if getattr(det, "isolation_", None) is not None:
        arrays.update({f"isolation_{k}": v for k, v in det.isolation_.arrays.items()})
    meta = {"format": "zspace-detector", "version": 1, "class": type(det).__name__,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in det.get_params().items()},
            "n_features": int(det.n_features_in_), "seed": det.seed_, "threshold": det.threshold_,
            "epochs": det.epochs_,
            "typical_nll": getattr(det, "typical_nll_", None),
            "label_column": label_column if label_column is not None else getattr(det, "label_column_", None),
            "model": {"name": det.model_.name, "config": det.model_.config.to_dict()}}
    return write_detector_folder(path, meta, {"model": det.model_}, arrays)


def load_detector(path, device: str = "cpu"):
    """A detector (tabular or image) saved by :func:`save_detector`, ready to score on ``device``
    (cpu, cuda, cuda:N; whatever device it was fitted on), nothing executed."""
    import json

    from .errors import CheckpointError
    from .training.checkpoint import load_tensors, load_weights

    from .core.io import read_json

    path = Path(path)
    if not (path / DETECTOR_FILE).exists():
        raise CheckpointError(f"{path}: not a saved detector (no {DETECTOR_FILE})")
    meta = read_json(path / DETECTOR_FILE)
    if isinstance(meta, dict) and meta.get("class") == "ImageOutlierDetector":
        from .image_detect import load_image_detector

        return load_image_detector(path, meta, device=device)
    resolve_device(device)
    try:
        cls = _CLASSES[meta["class"]]
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["params"].items()}
        params["device"] = str(device)     # the saved one says where it was fitted; it scores where asked
        det = cls(**params)
        det.model_ = build_model(meta["model"]["name"], meta["model"]["config"]).eval()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not a saved detector (no {DETECTOR_FILE})") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path / DETECTOR_FILE}: damaged or not a zspace detector ({e})") from None
    _check_saved_detector(det, meta, path)
    load_weights(det.model_, path / "model.safetensors")
    det.model_.to(resolve_device(device))
    arrays = load_tensors(path / "fitted.safetensors")
    _check_fitted_arrays(det.scaling, arrays, meta["n_features"], path / "fitted.safetensors")
    det.n_features_in_, det.seed_, det.threshold_ = meta["n_features"], meta.get("seed"), meta["threshold"]
    det.epochs_ = meta.get("epochs", det.epochs)
    det.decision_scores_ = arrays["decision_scores"].numpy()
    det.labels_ = (det.decision_scores_ > det.threshold_).astype(int)
    det.scaler_ = _Scaling(det.scaling, {k[len("scaler_"):]: v.numpy() for k, v in arrays.items()
                                         if k.startswith("scaler_")})
    det.typical_nll_ = meta.get("typical_nll")
    det.latent_ = det.combination_ = det.isolation_ = None
    label = meta.get("label_column")
    if label is not None and not isinstance(label, (str, int)) or isinstance(label, bool):
        raise CheckpointError(f"{path / DETECTOR_FILE}: label_column must be a column name or index, got {label!r}")
    det.label_column_ = label
    if "latent_mean" in arrays:
        det.latent_ = LatentGaussian.from_arrays(arrays["latent_mean"].numpy(), arrays["latent_precision"].numpy())
    if "combination_center" in arrays:
        det.combination_ = ScoreCombination(arrays["combination_center"].numpy(), arrays["combination_scale"].numpy())
    if "isolation_feature" in arrays:
        det.isolation_ = _isolation_from(arrays, meta["n_features"], path / "fitted.safetensors")
    _check_score_statistics(det, path / "fitted.safetensors")
    return det


# The arrays each scaling stores, all with one entry per feature (quantiles: a column each).
_SCALER_ARRAYS = {"standard": ("offset", "scale"), "minmax": ("offset", "scale"),
                  "power": ("lambdas", "offset", "scale"), "quantile": ("quantiles", "scale"), "none": ()}


def _check_saved_detector(det, meta: dict, path: Path) -> None:
    from .errors import CheckpointError

    where = path / DETECTOR_FILE
    n = meta.get("n_features")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CheckpointError(f"{where}: n_features must be an integer >= 1, got {n!r}")
    for key in ("threshold", "typical_nll"):
        t = meta.get(key)
        if (t is not None or key == "threshold") and (
                isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t)):
            raise CheckpointError(f"{where}: {key} must be a finite number, got {t!r}")
    try:   # the estimator's own parameter checks: a bogus score or scaling would score wrongly
        det._check_params(n)
    except ConfigError as e:
        raise CheckpointError(f"{where}: {e}") from None
    if det.model != det.model_.name:
        raise CheckpointError(f"{where}: params say model {det.model!r} but the saved model is "
                              f"{det.model_.name!r}")
    shape = tuple(det.model_.config.input_shape)
    if shape != (n,):
        raise CheckpointError(f"{where}: the model reads {shape} features but n_features is {n}")


def _check_score_statistics(det, where: Path) -> None:
    """A saved detector holds what its score needs (a damaged or hand-edited one may not)."""
    from .errors import CheckpointError

    members = score_members(det.score_type)
    needs = {"latent Gaussian": ("mahalanobis" in members, det.latent_),
             "typical NLL": ("typicality" in members, det.typical_nll_),
             "score combination": (len(members) > 1, det.combination_),
             "isolation forest": ("isolation" in members, det.isolation_)}
    for what, (needed, value) in needs.items():
        if needed and value is None:
            raise CheckpointError(f"{where}: score {det.score_type!r} needs the {what}, which is missing")
    if det.combination_ is not None and det.combination_.center.shape != (len(members),):
        raise CheckpointError(f"{where}: the score combination has {det.combination_.center.shape} entries "
                              f"for {len(members)} scores")


def _isolation_from(arrays: dict, n_features: int, where: Path) -> IsolationScores:
    """The stored forest, checked so that a damaged file cannot index outside its arrays."""
    from .errors import CheckpointError

    try:
        a = {k: arrays[f"isolation_{k}"].numpy() for k in IsolationScores.ARRAYS}
    except KeyError as e:
        raise CheckpointError(f"{where}: the isolation forest is incomplete (no {e.args[0]})") from None
    shape = a["feature"].shape
    nodes = shape[1] if len(shape) == 2 else 0
    ok = (len(shape) == 2 and all(a[k].shape == shape for k in ("threshold", "left", "right", "leaf_depth"))
          and a["subsample"].shape == (1,) and a["subsample"][0] >= 1 and nodes >= 1
          and ((a["feature"] >= 0) & (a["feature"] < n_features)).all()
          and all(((a[k] >= -1) & (a[k] < nodes)).all() for k in ("left", "right"))
          and ((a["left"] >= 0) == (a["right"] >= 0)).all()
          and all((np.arange(nodes) < np.where(a[k] >= 0, a[k], nodes)).all() for k in ("left", "right")))
    # (children come after their parents, so a walk always ends at a leaf)
    if not ok:
        raise CheckpointError(f"{where}: the isolation forest's arrays are damaged")
    return IsolationScores(a)


def _check_fitted_arrays(kind: str, arrays: dict, n: int, where: Path) -> None:
    from .errors import CheckpointError

    scores = arrays.get("decision_scores")
    if scores is None or scores.dim() != 1 or len(scores) == 0:
        raise CheckpointError(f"{where}: decision_scores missing or not a non-empty vector")
    for key, a in arrays.items():
        if a.is_floating_point() and not bool(torch.isfinite(a).all()):
            raise CheckpointError(f"{where}: {key} holds NaN or infinite values; the detector is damaged")
    for key in _SCALER_ARRAYS[kind]:
        a = arrays.get(f"scaler_{key}")
        if a is None or a.dim() not in (1, 2) or a.shape[-1] != n:
            raise CheckpointError(f"{where}: the {kind} scaling needs scaler_{key} with {n} features, "
                                  f"found {None if a is None else tuple(a.shape)}")


class _Scaling:
    """The fitted feature scaling, as plain arrays (fitted once, stored and restored as is).

    standard  (x - mean) / std
    minmax    (x - min) / range, clipped to [0, 1] (the Bernoulli decoder's range)
    power     Yeo-Johnson (each feature's λ by maximum likelihood, scikit-learn's
              PowerTransformer), then standardised: skewed, heavy-tailed features come out
              near-Gaussian while an extreme value stays extreme, and the map is smooth,
              so its log-Jacobian is exact
    quantile  each feature through its empirical CDF on the training data, then Φ⁻¹, so the
              marginals are standard normal and the model learns the dependencies; beyond the
              training range the map continues linearly (in training standard deviations),
              so an extreme value stays extreme
    none      as given

    ``log_jacobian(X)`` is Σ_j log dT_j/dx_j per row: a density of the scaled features
    becomes one of the features as given by adding it (change of variables), so the
    likelihood scores rank rows by -log p(x), not by -log p(T(x)).
    """

    def __init__(self, kind: str, arrays: dict[str, np.ndarray]):
        self.kind, self.arrays = kind, arrays

    @classmethod
    def fit(cls, kind: str, X: np.ndarray) -> "_Scaling":
        X = np.asarray(X, dtype=np.float64)
        std = X.std(0)
        std = np.where(std > 0, std, 1.0)
        if kind == "standard":
            return cls(kind, {"offset": X.mean(0), "scale": std})
        if kind == "minmax":
            lo, hi = X.min(0), X.max(0)
            return cls(kind, {"offset": lo, "scale": np.where(hi > lo, hi - lo, 1.0)})
        if kind == "power":
            import warnings

            from sklearn.preprocessing import PowerTransformer

            with warnings.catch_warnings():          # near-constant features: λ is irrelevant there
                warnings.simplefilter("ignore", RuntimeWarning)
                lambdas = PowerTransformer(method="yeo-johnson", standardize=False).fit(X).lambdas_
            psi = _yeo_johnson(X, lambdas)
            spread = psi.std(0)
            return cls(kind, {"lambdas": lambdas, "offset": psi.mean(0),
                              "scale": np.where(spread > 0, spread, 1.0)})
        if kind == "quantile":
            levels = np.linspace(0, 1, min(1000, len(X)))
            return cls(kind, {"quantiles": np.quantile(X, levels, axis=0), "scale": std})
        return cls(kind, {})

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self._map(np.asarray(X, dtype=np.float64)).astype(np.float32)

    def _map(self, x: np.ndarray) -> np.ndarray:
        a = self.arrays
        if self.kind in ("standard", "minmax"):
            x = (x - a["offset"]) / a["scale"]
            if self.kind == "minmax":
                x = np.clip(x, 0.0, 1.0)
        elif self.kind == "power":
            x = np.clip((_yeo_johnson(x, a["lambdas"]) - a["offset"]) / a["scale"], -_FAR, _FAR)
        elif self.kind == "quantile":
            x = np.column_stack([self._gaussianize(x[:, j], a["quantiles"][:, j], a["scale"][j])
                                 for j in range(x.shape[1])])
        return x

    def log_jacobian(self, X: np.ndarray) -> np.ndarray:
        """Σ_j log dT_j/dx_j for each row of raw features X, (n,) float64."""
        x = np.asarray(X, dtype=np.float64)
        a = self.arrays
        if self.kind == "none":
            return np.zeros(len(x))
        if self.kind in ("standard", "minmax"):      # constant: no effect on rankings
            return np.full(len(x), -np.log(a["scale"]).sum())
        if self.kind == "power":                     # d/dx YJ = (1 + |x|)^(sign(x) (λ - 1))
            return ((a["lambdas"] - 1) * np.sign(x) * np.log1p(np.abs(x)) - np.log(a["scale"])).sum(1)
        # quantile: piecewise linear in the bulk, linear beyond it: a central difference over
        # +-0.001 training standard deviations
        h = 1e-3 * np.maximum(a["scale"], 1e-12)
        slope = (self._map(x + h) - self._map(x - h)) / (2 * h)
        return np.log(np.maximum(slope, 1e-12)).sum(1)

    @staticmethod
    def _gaussianize(x: np.ndarray, q: np.ndarray, spread: float) -> np.ndarray:
        from scipy.special import ndtri

        levels = np.linspace(0, 1, len(q))
        # ties (discrete features): average the interpolation from both sides
        u = 0.5 * (np.interp(x, q, levels) - np.interp(-x, -q[::-1], -levels[::-1]))
        eps = 0.5 / len(q)
        z = ndtri(np.clip(u, eps, 1 - eps))
        return z + (np.maximum(x - q[-1], 0) + np.minimum(x - q[0], 0)) / spread


_FAR = 1e4      # scaled features are clipped to +-_FAR training spreads (float32-safe)


def _yeo_johnson(x: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """Yeo & Johnson (2000)'s power transform of each column with its λ."""
    lam = np.asarray(lambdas, dtype=np.float64)
    pos, neg = np.log1p(np.maximum(x, 0.0)), np.log1p(np.maximum(-x, 0.0))

    def box(t, power):                       # ((1 + x)^power - 1) / power, log(1 + x) at power 0
        small = np.abs(power) < 1e-8
        safe = np.where(small, 1.0, power)
        return np.where(small, t, np.expm1(np.minimum(safe * t, 700.0)) / safe)

    return np.where(x >= 0, box(pos, lam), -box(neg, 2.0 - lam))
