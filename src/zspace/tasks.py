"""Tasks: what a user does with a trained run, as functions returning small result dataclasses.

The CLI parses flags, calls one task and prints its result; the scorecard, the demo and
the report call the same tasks, so a choice such as "exact or importance-sampled
likelihood" is made once, here.

    evaluate_run      test likelihood (exact or importance-sampled, by the model's capability),
                      what the number means, reconstruction error
    sample_run        samples from the prior (decoded through the VQ-VAE for a code prior)
    reconstruct_run   inputs and their reconstructions
    encode_run        codes of a split (continuous codes or VQ-VAE code grids)
    denoise_run       corrupted inputs, their reconstructions, PSNR (and SSIM for images)
    score_rows        an outlier detector's scores and flags for rows, with the separation
                      against 0/1 labels when the rows have them
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from .core.progress import Progress
from .data.transforms import Preprocessing
from .errors import ConfigError
from .evaluation.image_quality import psnr, ssim
from .evaluation.likelihood import (LikelihoodMeaning, LikelihoodReport, collect, evaluate_exact_likelihood,
                                    evaluate_likelihood, reconstruction_error)
from .models.capabilities import (ContinuousCode, DiscreteCodes, ExactLikelihood, ImportanceSampledLikelihood,
                                  Reconstructs, SamplesFromPrior)
from .models.vqprior import VQPrior, code_grid_meaning
from .rng import seeded


# Importance samples per example by default: about a tenth of the literature's k = 1000 (Burda et
# al. 2016) and of its time; the printed standard error says how precise the mean is, and
# `--nll-samples 1000` gives the literature's setting.
DEFAULT_NLL_SAMPLES = 100
LITERATURE_NLL_SAMPLES = 1000


def model_device(model) -> torch.device:
    """Where the model's weights are (batches are moved there)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def has_likelihood(model) -> bool:
    """Whether ``estimate_likelihood`` can measure the model (exactly or by importance sampling)."""
    return isinstance(model, (ExactLikelihood, ImportanceSampledLikelihood))


# Beyond this many samples per example an evaluation runs for days on a CPU without changing the
# estimate within its standard error: a typo (1e9), refused rather than started.
MAX_NLL_SAMPLES = 100_000


def estimate_likelihood(model, batches: Iterable, nll_samples: int = DEFAULT_NLL_SAMPLES,
                        offset_nats_per_dim: float = 0.0,
                        progress: Progress | None = None) -> tuple[LikelihoodReport, bool] | None:
    """(report, exact): the exact NLL of a model that has one, else the importance-sampled
    bound with ``nll_samples`` samples; None for a model with neither. ``progress`` counts
    the examples done."""
    step = progress.update if progress is not None else None
    device = model_device(model)
    if isinstance(model, ExactLikelihood):
        return evaluate_exact_likelihood(model, batches, device=device, offset_nats_per_dim=offset_nats_per_dim,
                                         progress=step), True
    if isinstance(model, ImportanceSampledLikelihood):
        if not 1 <= nll_samples <= MAX_NLL_SAMPLES:
            raise ConfigError(f"--nll-samples must be in [1, {MAX_NLL_SAMPLES:,}], got {nll_samples:,} (the literature "
                              f"uses 5,000; the estimate's spread shrinks only like 1/sqrt(k) beyond that)")
        return evaluate_likelihood(model, batches, nll_samples, device=device,
                                   offset_nats_per_dim=offset_nats_per_dim, progress=step), False
    return None


def likelihood_meaning_of(run) -> LikelihoodMeaning:
    """What the run's NLL means: the model's own policy for the run's preprocessing (a prior
    run written before VQPrior, a bare PixelCNN over codes, means code grids too)."""
    if run.config.get("prior_of") and not isinstance(run.model, VQPrior):
        return code_grid_meaning(run.model.config.levels)
    return run.model.likelihood_meaning(run.data_spec.preprocessing)


@dataclass
class Evaluation:
    run: str
    model: str
    split: str
    likelihood: LikelihoodReport | None = None
    exact: bool = False
    meaning: LikelihoodMeaning | None = None
    reconstruction_mse: float | None = None
    nll_samples: int = 0
    position: dict = field(default_factory=dict)    # the weights' epoch, batch, step, checkpoint (Run.position)

    @property
    def name(self) -> str:
        """'exact' or 'k<samples>': the file name's tag (eval-SPLIT-NAME.json)."""
        return "exact" if self.exact else f"k{self.nll_samples}"

    @property
    def bits_per_dim_std_err(self) -> float:
        """The standard error of bits/dim: that of the NLL over D ln 2 (the offset is a constant)."""
        rep = self.likelihood
        return rep.nll_std_err / (rep.num_dims * math.log(2))

    def as_dict(self) -> dict:
        out = {"run": self.run, "model": self.model, "split": self.split, **self.position}
        if self.likelihood is not None:
            out.update(self.likelihood.as_dict(), likelihood_kind=self.meaning.kind,
                       likelihood_note=self.meaning.note)
            if self.exact:
                out["exact"] = True
        if self.reconstruction_mse is not None:
            out["reconstruction_mse"] = self.reconstruction_mse
        return out


def evaluate_run(run, split: str = "test", nll_samples: int = DEFAULT_NLL_SAMPLES, batch_size: int = 500,
                 limit: int | None = None, seed: int = 0, progress: bool | None = None) -> Evaluation:
    """The run's likelihood on a split (exact or importance-sampled) and its reconstruction error;
    ``progress`` shows a bar (or periodic lines) over the examples (None: the process setting,
    see core.progress)."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    loader = run.loader(split, batch_size=batch_size, limit=limit)
    result = Evaluation(str(run.path), run.describe(), split, nll_samples=nll_samples, position=run.position())
    if has_likelihood(run.model):
        result.meaning = likelihood_meaning_of(run)
        what = "exact NLL" if isinstance(run.model, ExactLikelihood) else f"IS NLL, k={nll_samples}"
        with seeded(seed), Progress(len(loader.data), f"eval {split} ({what})", "examples",
                                    enabled=progress) as bar:
            result.likelihood, result.exact = estimate_likelihood(
                run.model, loader.epoch(0), nll_samples, result.meaning.offset_nats_per_dim, progress=bar)
    if isinstance(run.model, Reconstructs):
        result.reconstruction_mse = reconstruction_error(run.model, loader.epoch(0), device=model_device(run.model))
    return result


def check_label(run, label: int | None, default: int | None = None) -> int | None:
    """A user's class choice checked against the run's model; a conditional model without
    one gets ``default``, or an error when there is none."""
    k = run.model.num_classes
    if label is not None and not k:
        raise ConfigError("--label is for conditional models only")
    if k and label is None:
        if default is None:
            raise ConfigError(f"{run.describe()} is conditional: choose the class with --label 0..{k - 1}")
        return default
    if label is not None and not 0 <= label < k:
        raise ConfigError(f"--label {label} out of range: the model has {k} classes")
    return label


@dataclass
class Samples:
    x: torch.Tensor            # (n, *shape) in input space
    label: int | None
    seed: int


def sample_run(run, n: int, label: int | None = None, seed: int = 0) -> Samples:
    """n samples from the run's prior (given a class for a conditional model)."""
    if n < 1:
        raise ConfigError(f"-n must be >= 1, got {n}")
    label = check_label(run, label)
    with seeded(seed):
        x = run.sample(n, y=label)
    return Samples(x.cpu(), label, seed)


@dataclass
class Reconstructions:
    inputs: torch.Tensor       # what the model was given (a binarized draw for a binarized run)
    outputs: torch.Tensor      # its reconstructions (the decoder mean)
    split: str
    grey: torch.Tensor | None = None   # the same examples' grey levels in [0, 1] (= inputs unless binarized)


def _require(run, capability, what: str) -> None:
    if not isinstance(run.model, capability):
        raise ConfigError(f"{run.describe()} {what}")


def reconstruct_run(run, n: int = 16, split: str = "test") -> Reconstructions:
    """The first n examples of a split and the model's reconstructions of them."""
    if n < 1:
        raise ConfigError(f"-n must be >= 1, got {n}")
    _require(run, Reconstructs, "does not reconstruct its inputs (no encoder)")
    batch = next(iter(run.loader(split, batch_size=n, limit=n).epoch(0)))
    device = next(run.model.parameters()).device
    with torch.no_grad():
        moved = batch.to(device)
        rec = run.model.reconstruct(moved.x, moved.y).cpu()
    return Reconstructions(batch.x, rec, split, grey_levels(run, split, n, batch.x))


def grey_levels(run, split: str, n: int, inputs: torch.Tensor) -> torch.Tensor:
    """The grey levels in [0, 1] of a split's first n examples, whose model inputs are ``inputs``:
    for a binarized run the stored images scaled (what a person recognises), else ``inputs``."""
    if run.data_spec.preprocessing not in ("dynamic-binarize", "static-binarize"):
        return inputs
    return next(iter(run.loader(split, batch_size=n, limit=n, preprocessing=Preprocessing("scale")).epoch(0))).x


@dataclass
class Codes:
    z: np.ndarray              # (N, D) continuous codes or (N, h, w) code grids
    y: np.ndarray | None       # the split's labels


def encode_run(run, split: str = "test", data=None) -> Codes:
    """Codes of every example of a split (``data``: other data of the same shape)."""
    loader = run.loader(split, 500, data=data)
    device = model_device(run.model)
    if isinstance(run.model, ContinuousCode):
        z = collect(run.model, loader.epoch(0), lambda m, x, y: m.embed(x, y), device=device)
    elif isinstance(run.model, DiscreteCodes):                  # VQ-VAE: the grids of code indices
        z = collect(run.model, loader.epoch(0), lambda m, x, y: m.encode_codes(x), device=device)
    else:
        raise ConfigError(f"{run.describe()} has no encoder: nothing to encode")
    return Codes(z, loader.data.y)


@dataclass
class Denoising:
    corruption: object
    clean: torch.Tensor
    noisy: torch.Tensor
    denoised: torch.Tensor
    psnr: dict[str, float] = field(default_factory=dict)    # "corrupted input", "denoised": mean dB
    ssim: dict[str, float] = field(default_factory=dict)    # the same, for image data


def denoise_run(run, corruption: str, level: float, split: str = "test", limit: int | None = None,
                seed: int = 0, data=None) -> Denoising:
    """Corrupts a split's inputs, reconstructs them and measures both against the clean ones."""
    from .data.corruptions import make_corruption

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    corrupt = make_corruption(corruption, level)
    _require(run, Reconstructs, "does not reconstruct its inputs: it cannot denoise")
    if run.data_spec.preprocessing not in ("scale", "none"):
        raise ConfigError(f"denoising compares grey levels; this run was trained on "
                          f"{run.data_spec.preprocessing!r} inputs")
    loader = run.loader(split, 500, limit=limit, data=data)
    g = torch.Generator().manual_seed(seed)
    clean, noisy, out = [], [], []
    device = model_device(run.model)
    with torch.no_grad():
        for b in loader.epoch(0):
            n = corrupt(b.x, g)
            clean.append(b.x)
            noisy.append(n)
            y = b.y.to(device) if b.y is not None else None
            out.append(run.model.reconstruct(n.to(device), y).clamp(0, 1).cpu())
    result = Denoising(corrupt, torch.cat(clean), torch.cat(noisy), torch.cat(out))
    images = result.clean.dim() == 4 and result.clean.shape[1] in (1, 3)

    def as_4d(t):      # vectors count as one-row images for PSNR (the same per-example MSE)
        return t if t.dim() == 4 else t.reshape(len(t), 1, 1, -1)
    for name, t in (("corrupted input", result.noisy), ("denoised", result.denoised)):
        result.psnr[name] = float(psnr(as_4d(t), as_4d(result.clean)).mean())
        if images:
            result.ssim[name] = float(ssim(t, result.clean).mean())
    return result


@dataclass
class RowScores:
    scores: np.ndarray         # (N,) higher = more abnormal
    flags: np.ndarray          # (N,) 1 above the detector's threshold
    separation: dict | None    # AUROC, AUPRC, FPR at 95% TPR against 0/1 labels, when given

    def csv(self, y=None) -> str:
        header = "row,score,outlier" + (",label" if y is not None else "")
        lines = [f"{i},{s:.9g},{f}" + (f",{int(y[i])}" if y is not None else "")
                 for i, (s, f) in enumerate(zip(self.scores, self.flags))]
        return "\n".join([header, *lines]) + "\n"


def score_rows(detector, x: np.ndarray, y: np.ndarray | None = None) -> RowScores:
    """A fitted detector's scores and flags for rows x (N, features)."""
    if getattr(detector, "image_shape", None) is None and x.shape[1] != detector.n_features_in_:
        raise ConfigError(f"the detector was fitted on {detector.n_features_in_} features, "
                          f"these rows have {x.shape[1]}")
    scores = detector.decision_function(x)
    flags = (scores > detector.threshold_).astype(int)
    separation = None
    if y is not None and set(np.unique(y).tolist()) == {0, 1}:
        from .evaluation.outliers import separation as measure

        separation = measure(y, scores)
    return RowScores(scores, flags, separation)


def write_evaluation(result: Evaluation, path: str | Path | None, run_path: Path) -> Path:
    """Writes the evaluation's JSON (default RUN/eval-SPLIT-NAME.json) and returns its path."""
    from .core.io import write_json_atomic

    out = Path(path) if path is not None else Path(run_path) / f"eval-{result.split}-{result.name}.json"
    if path is not None:
        from .training.run import check_output_path

        check_output_path(out)   # never over the run's own config, metrics or checkpoints
    write_json_atomic(out, result.as_dict())
    return out
