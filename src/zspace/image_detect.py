"""Out-of-distribution detection on images with a trained generative model.

    det = ImageOutlierDetector.from_run(zspace.load_run("runs/vae")).fit(train_images)
    det.decision_function(images)    # (N,) higher = more abnormal
    det.predict(images)              # 1 = outlier (score above threshold_), 0 = inlier
    save_image_detector(det, "det"); zspace.detect.load_detector("det")

Images: (N, C, H, W), (N, H, W) for grey, or rows of C*H*W values; 8-bit integers or floats
in [0, 1] (stored as 8-bit, as the compressor needs). They go through the run's own
preprocessing before the model sees them.

Scores (``score_type``), each from evaluation/outliers.py, higher = more abnormal:
  combined          the default: the member statistics below that the model supports, each
                    standardised on the training images, joined by a Gaussian over them
                    (ScoreCombination "gaussian", DoSE's idea, Morningstar et al. 2021): an
                    image is abnormal when its *combination* of statistics is, so the raw
                    likelihood's failure (Nalisnick et al. 2019: simpler images look likelier)
                    is caught by its disagreement with the compressed size. For a model with a
                    likelihood, the larger of that distance and the orientation score, each
                    robust-standardised on the training images (a Gaussian over all five
                    dilutes orientation's one strong signal in four dimensions of noise)
  nll               -log p(x), importance-sampled (VAEs) or exact (PixelCNNs), nats
  complexity        NLL in bits minus the PNG code length in bits (Serrà et al. 2020)
  typicality        |NLL - mean training NLL| (Nalisnick et al. 2019b)
  likelihood-ratio  NLL minus a background model's NLL (Ren et al. 2019; ``background``: the
                    same family trained with input_mutation)
  reconstruction    mean squared reconstruction error
  mahalanobis       of the code under a Gaussian fitted to the training codes
  orientation       NLL(x) minus the lower NLL of x mirrored left-right and upside down: how
                    much likelier the model finds the image re-oriented. Inliers sit in the
                    orientation the model learnt (strongly negative); a mirrored image has its
                    original among the flips (positive). The per-image pairing removes what
                    makes raw likelihoods fail on flips: how much ink and detail an image has.
                    A generative cousin of Hendrycks et al. (2019)'s rotation-prediction score;
                    it costs two more likelihood passes
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.dataset import ArrayData
from .data.loader import BatchLoader
from .data.transforms import Preprocessing
from .errors import CheckpointError, ConfigError, DataError
from .evaluation import outliers as O
from .evaluation.likelihood import collect
from .models.capabilities import (Conditional, ContinuousCode, ExactLikelihood, ImportanceSampledLikelihood,
                                  Reconstructs)
from .rng import seeded

IMAGE_SCORES = ("combined", "nll", "complexity", "typicality", "likelihood-ratio", "orientation", "reconstruction",
                "mahalanobis")
COMBINED_MEMBERS = ("nll", "complexity", "reconstruction", "mahalanobis", "orientation")
MAX_MEMBER = "orientation"   # joined to the others' Gaussian distance by a maximum, not inside it
_LIKELIHOOD = ("nll", "complexity", "typicality", "likelihood-ratio", "orientation")
FLIPS = (lambda x: x[..., ::-1], lambda x: x[..., ::-1, :])   # left-right, upside down


def _has_likelihood(model) -> bool:
    return isinstance(model, (ImportanceSampledLikelihood, ExactLikelihood))


def supported_scores(model, background=None) -> tuple[str, ...]:
    """The single scores ``model`` (and a background model, if given) can compute."""
    out = [s for s in _LIKELIHOOD if _has_likelihood(model) and (s != "likelihood-ratio" or background is not None)]
    if isinstance(model, Reconstructs):
        out.append("reconstruction")
    if isinstance(model, ContinuousCode):
        out.append("mahalanobis")
    return tuple(out)


class ImageOutlierDetector:
    """A trained image model (and optionally a background model) turned into a detector."""

    def __init__(self, model, preprocessing: str = "scale", *, score_type: str = "combined", background=None,
                 num_samples: int = 32, contamination: float = 0.1, batch_size: int = 500, seed: int = 0):
        shape = tuple(getattr(model.config, "input_shape", ()))
        if len(shape) != 3:
            raise ConfigError(f"an image detector needs a model of images (C, H, W); this one reads {shape}")
        if isinstance(model, Conditional):
            raise ConfigError("this model is class-conditional: its scores need labels; use an unconditional run")
        if score_type not in IMAGE_SCORES:
            raise ConfigError(f"unknown image score {score_type!r}; choose one of {', '.join(IMAGE_SCORES)}")
        can = supported_scores(model, background)
        if score_type in _LIKELIHOOD and score_type not in can:
            raise ConfigError(f"score {score_type!r} needs " + (
                "a background model (a run of the same family trained with --input-mutation)"
                if score_type == "likelihood-ratio" and _has_likelihood(model) else
                f"a model with a likelihood (a VAE or PixelCNN); {type(model).__name__} has none"))
        if score_type not in can and score_type != "combined":
            raise ConfigError(f"score {score_type!r} is not available for {type(model).__name__} "
                              f"(it supports {', '.join(can)})")
        if background is not None and tuple(background.config.input_shape) != shape:
            raise ConfigError(f"the background model reads {tuple(background.config.input_shape)}, the model {shape}")
        c = contamination
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c <= 0.5:
            raise ConfigError(f"contamination must lie in (0, 0.5], got {c!r}")
        for name, v in (("num_samples", num_samples), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        Preprocessing(preprocessing)            # validates the name
        self.model, self.background = model.eval(), None if background is None else background.eval()
        self.preprocessing, self.score_type, self.num_samples = preprocessing, score_type, num_samples
        self.contamination, self.batch_size, self.seed = float(c), batch_size, int(seed)
        self.image_shape = shape
        self.members = tuple(m for m in COMBINED_MEMBERS if m in can) if score_type == "combined" else (score_type,)
        if not self.members:
            raise ConfigError(f"{type(model).__name__} supports none of the combined score's statistics")
        self.latent_ = self.typical_nll_ = self.combination_ = self.either_ = self.threshold_ = None

    @classmethod
    def from_run(cls, run, background_run=None, **options) -> "ImageOutlierDetector":
        """A detector on a run's model with the run's preprocessing (and a background run's model)."""
        background = None
        if background_run is not None:
            if background_run.model.name != run.model.name:
                raise ConfigError(f"the background run holds a {background_run.model.name}, "
                                  f"the run a {run.model.name}: use the same family")
            background = background_run.model
        return cls(run.model, run.data_spec.preprocessing, background=background, **options)

    # ---- images in ---------------------------------------------------------------------------
    def as_images(self, images) -> np.ndarray:
        """8-bit (N, C, H, W) images of this detector's shape, or a clear DataError."""
        x = np.asarray(images)
        c, h, w = self.image_shape
        if x.ndim == 2 and x.shape[1] == c * h * w:
            x = x.reshape(len(x), c, h, w)
        elif x.ndim == 3 and c == 1:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1:] != self.image_shape or len(x) == 0:
            got = "x".join(map(str, x.shape[1:])) if x.ndim > 1 else str(x.shape)
            raise DataError(f"the detector reads images of {c}x{h}x{w} (channels x height x width), "
                            f"got {len(x) if x.ndim else 0} of {got}")
        if x.dtype == np.uint8:
            return x
        if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataError("images must be 8-bit integers or finite floats in [0, 1]")
        return np.round(x * 255).astype(np.uint8)

    # ---- statistics --------------------------------------------------------------------------
    def statistics(self, images) -> dict[str, np.ndarray]:
        """The raw statistics the members need, (N,) each ("codes": (N, code_dim))."""
        x = self.as_images(images)
        loader = self._loader(x)
        need = set(self.members)
        out: dict[str, np.ndarray] = {}
        with seeded(self.seed):
            if need & set(_LIKELIHOOD):
                out["nll"] = self._nll(self.model, loader)
            if "likelihood-ratio" in need:
                out["nll_background"] = self._nll(self.background, loader)
            if "orientation" in need:
                out["nll_flipped"] = np.minimum(*(self._nll(self.model, self._loader(np.ascontiguousarray(flip(x))))
                                                  for flip in FLIPS))
            if "reconstruction" in need:
                out["reconstruction"] = O.reconstruction_scores(self.model, loader.epoch(0), "l2")
        if "complexity" in need:
            out["png_bits"] = O.png_bits(x)
        if "mahalanobis" in need:
            out["codes"] = collect(self.model, loader.epoch(0), lambda m, b, y: m.embed(b),
                                   device=next(self.model.parameters()).device)
        return out

    def _loader(self, x: np.ndarray) -> BatchLoader:
        return BatchLoader(ArrayData.from_arrays(x), self.batch_size, Preprocessing(self.preprocessing),
                           shuffle=False, seed=self.seed)

    def _nll(self, model, loader) -> np.ndarray:
        if isinstance(model, ImportanceSampledLikelihood):
            return O.importance_sampled_nll(model, loader.epoch(0), self.num_samples)
        return O.exact_nll(model, loader.epoch(0))

    def member_scores(self, st: dict[str, np.ndarray]) -> np.ndarray:
        """(N, len(members)) scores from the statistics of :meth:`statistics`."""
        cols = []
        for m in self.members:
            if m == "nll":
                cols.append(st["nll"])
            elif m == "complexity":
                cols.append(O.complexity_corrected(st["nll"], st["png_bits"]))
            elif m == "typicality":
                cols.append(np.abs(st["nll"] - self.typical_nll_))
            elif m == "likelihood-ratio":
                cols.append(O.likelihood_ratio(st["nll"], st["nll_background"]))
            elif m == "orientation":
                cols.append(st["nll"] - st["nll_flipped"])
            elif m == "reconstruction":
                cols.append(st["reconstruction"])
            else:
                cols.append(self.latent_.score(st["codes"]))
        return np.column_stack(cols)

    # ---- the detector ------------------------------------------------------------------------
    def fit(self, images) -> "ImageOutlierDetector":
        """Fits the scores' statistics and the threshold on in-distribution (training) images."""
        st = self.statistics(images)
        if len(next(iter(st.values()))) < 2:
            raise DataError("need at least two training images")
        self.latent_ = O.LatentGaussian(st["codes"]) if "codes" in st else None
        self.typical_nll_ = float(st["nll"].mean()) if "typicality" in self.members else None
        s = self.member_scores(st)
        self.combination_ = self.either_ = None
        if self.score_type == "combined":
            self.combination_, self.either_ = fit_combined(s, self.members)
        self._finish_fit(self._combine(s))
        return self

    def _finish_fit(self, scores: np.ndarray) -> None:
        self.decision_scores_ = scores
        self.threshold_ = float(np.quantile(scores, 1 - self.contamination))
        self.labels_ = (scores > self.threshold_).astype(int)
        self.n_features_in_ = int(np.prod(self.image_shape))

    def _combine(self, s: np.ndarray) -> np.ndarray:
        if self.combination_ is None:
            return s[:, 0]
        return combined_score(s, self.members, self.combination_, self.either_)

    def decision_function(self, images) -> np.ndarray:
        if self.threshold_ is None:
            raise ConfigError("this image detector is not fitted yet: call fit(training images) first")
        return self._combine(self.member_scores(self.statistics(images)))

    def score_samples(self, images) -> np.ndarray:
        return -self.decision_function(images)

    def predict(self, images) -> np.ndarray:
        return (self.decision_function(images) > self.threshold_).astype(int)

    def describe(self) -> str:
        return (f"{self.model.describe()}, score {self.score_type}"
                + (f" ({', '.join(self.members)})" if self.score_type == "combined" else ""))


def _split(members) -> tuple[list[int], int | None]:
    """Columns of the Gaussian combination, and the column joined to it by a maximum (or None)."""
    inner = [i for i, m in enumerate(members) if m != MAX_MEMBER]
    top = members.index(MAX_MEMBER) if MAX_MEMBER in members and inner else None
    return (inner, top) if top is not None else (list(range(len(members))), None)


def fit_combined(s: np.ndarray, members) -> tuple[O.ScoreCombination, O.ScoreCombination | None]:
    """The "combined" score fitted on training scores s (N, len(members)): a Gaussian over the
    members but orientation, and (with orientation) the robust scales of that distance and of
    orientation, whose larger standardised value is the score."""
    inner, top = _split(members)
    gaussian = O.ScoreCombination.fit(s[:, inner], "gaussian")
    if top is None:
        return gaussian, None
    return gaussian, O.ScoreCombination.fit(np.column_stack([gaussian.score(s[:, inner]), s[:, top]]), "mean")


def combined_score(s: np.ndarray, members, gaussian, either) -> np.ndarray:
    inner, top = _split(members)
    d = gaussian.score(s[:, inner])
    if either is None:
        return d
    return either.standardised(np.column_stack([d, s[:, top]])).max(1)


def fit_run_detector(run_dir, images=None, *, background_dir=None, limit: int = 10000, device: str = "cpu",
                     **options):
    """A detector on the run at ``run_dir``, fitted on ``images`` (default: up to ``limit`` of the
    run's own training images); the run (and background run) are loaded onto ``device`` and
    score there."""
    from .training.run import load_run

    run = load_run(run_dir, map_location=device)
    background = load_run(background_dir, map_location=device) if background_dir else None
    det = ImageOutlierDetector.from_run(run, background, **options)
    if images is None:
        images = run.data().train.head(limit).x
    return det.fit(images)


# ---- saving and loading (JSON + safetensors, like the tabular detectors) ---------------------
def save_image_detector(det: ImageOutlierDetector, path) -> Path:
    """Writes a fitted image detector to the folder ``path`` (replaced atomically)."""
    from .detect import write_detector_folder

    if det.threshold_ is None:
        raise ConfigError("fit the image detector before saving it")
    arrays = {"decision_scores": np.asarray(det.decision_scores_, np.float64)}
    if det.latent_ is not None:
        arrays.update(latent_mean=det.latent_.mean, latent_precision=det.latent_.precision)
    if det.combination_ is not None:
        arrays.update(combination_center=det.combination_.center, combination_scale=det.combination_.scale,
                      combination_precision=det.combination_.precision)
    if det.either_ is not None:
        arrays.update(either_center=det.either_.center, either_scale=det.either_.scale)
    models = {"model": det.model} | ({"background": det.background} if det.background is not None else {})
    meta = {"format": "zspace-detector", "version": 1, "class": "ImageOutlierDetector",
            "params": {"preprocessing": det.preprocessing, "score_type": det.score_type,
                       "num_samples": det.num_samples, "contamination": det.contamination,
                       "batch_size": det.batch_size, "seed": det.seed},
            "threshold": det.threshold_, "typical_nll": det.typical_nll_, "members": list(det.members),
            "image_shape": list(det.image_shape),
            **{name: {"name": m.name, "config": m.config.to_dict()} for name, m in models.items()}}
    return write_detector_folder(path, meta, models, arrays)


def load_image_detector(path: Path, meta: dict, device: str = "cpu") -> ImageOutlierDetector:
    """The image detector in ``path`` (its detector.json already read as ``meta``), its models on
    ``device``."""
    from .core.compute import resolve_device
    from .models.base import build_model
    from .training.checkpoint import load_tensors, load_weights

    where = path / "detector.json"
    try:
        models = {name: build_model(meta[name]["name"], meta[name]["config"])
                  for name in ("model", "background") if name in meta}
        params = dict(meta["params"])
        params["contamination"] = float(params["contamination"])
        det = ImageOutlierDetector(models["model"], background=models.get("background"), **params)
        threshold, members = meta["threshold"], tuple(meta["members"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{where}: damaged or not a zspace image detector ({e})") from None
    if det.score_type == "combined" and set(members) <= set(det.members) and members:
        det.members = members    # a detector saved before a member was added keeps its own
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or members != det.members:
        raise CheckpointError(f"{where}: threshold or score members do not match this model")
    dev = resolve_device(device)
    for name, m in models.items():
        load_weights(m, path / f"{name}.safetensors")
        m.to(dev).eval()
    a = {k: v.numpy() for k, v in load_tensors(path / "fitted.safetensors").items()}
    try:
        det.latent_ = O.LatentGaussian.from_arrays(a["latent_mean"], a["latent_precision"]) \
            if "mahalanobis" in members else None
        det.combination_ = O.ScoreCombination(a["combination_center"], a["combination_scale"],
                                              a["combination_precision"]) if det.score_type == "combined" else None
        det.either_ = O.ScoreCombination(a["either_center"], a["either_scale"]) \
            if det.score_type == "combined" and _split(members)[1] is not None else None
        det.typical_nll_ = float(meta["typical_nll"]) if "typicality" in members else None
        scores = a["decision_scores"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / 'fitted.safetensors'}: missing or damaged fitted statistics ({e})") from None
    if det.combination_ is not None and det.combination_.center.shape != (len(_split(members)[0]),):
        raise CheckpointError(f"{path / 'fitted.safetensors'}: the combination does not match {len(members)} scores")
    if det.either_ is not None and det.either_.center.shape != (2,):
        raise CheckpointError(f"{path / 'fitted.safetensors'}: the orientation maximum is damaged")
    det._finish_fit(scores)
    det.threshold_ = float(threshold)
    det.labels_ = (scores > det.threshold_).astype(int)
    return det

