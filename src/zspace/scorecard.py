"""`zspace scorecard RUN [RUN ...]`: the lectures' table of ✓ / ✗ / ? with measured numbers.

One column per run plus the real test data as the reference column, one row per
criterion; every number names its estimator, N and the feature extractor, and runs are
only compared on one data set, one N and one extractor (``Scorecard.add`` refuses a mix).

    efficient sampling          samples per second (one batch warm-up, then N samples)
    high-quality samples        FID-, KID- and IS-<extractor> of N samples against the real
                                training images; precision (k = 3)
    coverage                    recall (k = 3) and coverage (k = 5)
    well-behaved latent space   latent smoothness along interpolations between encoded test
                                pairs (worst step / mean step; 1 = even)
    interpretable latent space  active units (Burda et al.'s A > 0.01) of D
    efficient likelihood        test NLL (exact for autoregressive models, importance-sampled
                                bound otherwise) and its cost in ms per example

The real-data column compares the test split with the training split: the floor for
FID/KID and the ceiling for IS, precision and recall at this N.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .core.progress import Progress
from .errors import ConfigError
from .evaluation import sample_quality as sq
from .evaluation.features import Extractor, load_extractor
from .models.capabilities import ContinuousCode, ExactLikelihood, LatentVariableModel, SamplesFromPrior
from .rng import seeded
from .tasks import estimate_likelihood, likelihood_meaning_of

SCORECARD_N = 1000     # default samples per model: minutes on a CPU; the literature uses 10000
KID_SUBSET, KID_SUBSETS = 1000, 50

CRITERIA = ("efficient sampling", "high-quality samples", "coverage", "well-behaved latent space",
            "interpretable latent space", "efficient likelihood")


@dataclass
class Scorecard:
    data: str
    n: int
    extractor: str
    columns: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, name: str, data: str, n: int, extractor: str, cells: dict[str, str]) -> None:
        if (data, n, extractor) != (self.data, self.n, self.extractor):
            raise ConfigError(f"{name} was measured on {data} with N = {n} and {extractor}; this scorecard "
                              f"holds {self.data}, N = {self.n}, {self.extractor}: they cannot share a table")
        self.columns[name] = cells

    def markdown(self) -> str:
        names = list(self.columns)
        head = "| criterion | " + " | ".join(names) + " |\n|---|" + "---|" * len(names)
        rows = [f"| {c} | " + " | ".join(self.columns[n].get(c, "—") for n in names) + " |" for c in CRITERIA]
        return (f"Scorecard on {self.data}: N = {self.n} samples per model, features {self.extractor}. "
                f"{self.kid_note()}\n\n" + head + "\n" + "\n".join(rows) + "\n")

    def kid_note(self) -> str:
        return (f"KID is the unbiased MMD² between sample and real training features with the cubic "
                f"polynomial kernel (x·y/d + 1)³ (Binkowski et al. 2018), in squared kernel-feature units "
                f"(0 = the same distribution, lower is better; it can dip below 0 by chance). On the shipped LeNet and CIFARNet "
                f"features (raw ReLU activations of scale tens) it runs to hundreds or thousands, not the ~10⁻³ of "
                f"Inception-based KID. Shown as the mean ± standard deviation over {KID_SUBSETS} random "
                f"subsets of {kid_subset_size(self.n)} rows each.")

    def html(self) -> str:
        names = list(self.columns)
        cells = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        body = "".join("<tr><th>" + html.escape(c) + "</th>" + "".join(
            f"<td>{html.escape(self.columns[n].get(c, '—'))}</td>" for n in names) + "</tr>" for c in CRITERIA)
        return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>zspace scorecard</title>"
                f"<style>body{{font-family:system-ui,sans-serif;margin:2em}}td,th{{border:1px solid #ccc;"
                f"padding:.3em .6em;text-align:left;vertical-align:top}}table{{border-collapse:collapse}}</style>"
                f"</head><body><h1>Scorecard: {html.escape(self.data)}</h1><p>N = {self.n} samples per model, "
                f"features {html.escape(self.extractor)}. {html.escape(self.kid_note())}</p><table><tr><th>criterion</th>{cells}</tr>{body}"
                f"</table></body></html>\n")


def kid_subset_size(n: int) -> int:
    """Rows per KID subset: Binkowski et al.'s 1000, but at most half of N, so that the 50
    subsets differ and their spread measures something (subsets of all N rows are one set
    drawn 50 times, whose spread is rounding error)."""
    return max(2, min(KID_SUBSET, n // 2))


def _quality_cells(ext, real_train_feats, images) -> dict[str, str]:
    feats = ext.features(images)
    fid = sq.frechet_distance(real_train_feats, feats)
    kid, kid_sd = sq.kernel_distance(real_train_feats, feats, num_subsets=KID_SUBSETS,
                                     subset_size=kid_subset_size(len(feats)))
    pr = sq.prdc(real_train_feats, feats, nearest_k=3)
    cov = sq.prdc(real_train_feats, feats, nearest_k=5)
    quality = f"FID {fid:.2f}, KID {kid:.4g}±{kid_sd:.2g}, precision {pr.precision:.3f}"
    if ext.has_classifier:               # the IS analogue needs class probabilities
        is_mean, is_sd = sq.inception_score(ext.probs(images), splits=10)
        quality += f", IS {is_mean:.2f}±{is_sd:.2f}"
    return {"high-quality samples": quality,
            "coverage": f"recall {pr.recall:.3f}, coverage {cov.coverage:.3f}"}


def _images(x: torch.Tensor) -> torch.Tensor:
    """Model outputs as images in [0, 1] (8-bit integers rescaled)."""
    from .report.figures import as_images

    images = as_images(x.detach().cpu(), tuple(x.shape[1:]))
    if images is None:
        raise ConfigError(f"the scorecard needs image samples, got shape {tuple(x.shape[1:])}")
    return images


def _pairs(run, classes: int, n: int = 32):
    """n pairs of test inputs (x_a, x_b) and, for a conditional model, a shared label per pair."""
    b = next(iter(run.loader("test", 500, limit=500).epoch(0)))
    if not classes:
        return b.x[:n], b.x[n:2 * n], None
    a_idx, b_idx = [], []
    for c in range(classes):
        idx = torch.nonzero(b.y == c).flatten().tolist()
        for i in range(0, len(idx) - 1, 2):
            a_idx.append(idx[i])
            b_idx.append(idx[i + 1])
    a_idx, b_idx = a_idx[:n], b_idx[:n]
    if not a_idx:
        raise ConfigError("no two test examples share a label: cannot pair them for a conditional model")
    return b.x[a_idx], b.x[b_idx], b.y[a_idx]


def evaluate_run(run, ext, real_train_feats, n: int, seed: int = 0, nll_samples: int = 100,
                 nll_limit: int = 1000) -> dict[str, str]:
    """The scorecard cells of one run."""
    model, cells = run.model, {}
    classes = model.num_classes
    if isinstance(model, SamplesFromPrior):
        y = torch.arange(n) % classes if classes else None
        with seeded(seed):
            x, seconds = sq.timed_sampling(lambda i, m: run.sample(m, y=None if y is None else y[i:i + m]),
                                           n, 1000, warmup=64)
        cells["efficient sampling"] = f"{n / seconds:.0f} samples/s"
        cells.update(_quality_cells(ext, real_train_feats, _images(x)))
    if isinstance(model, ContinuousCode):
        xa, xb, y = _pairs(run, classes)
        s = sq.latent_smoothness(model, xa, xb, lambda im: ext.features(_images(im)), steps=16, y=y)
        cells["well-behaved latent space"] = (f"smoothness {s.mean_ratio:.2f} (worst {s.worst_ratio:.2f}), "
                                              f"{s.num_paths} paths")
    if isinstance(model, LatentVariableModel):      # Burda's statistic assumes the N(0, I) prior's scale
        from .explore import per_dimension_activity

        act = per_dimension_activity(model, run.loader("test", 500, limit=2000).epoch(0))
        cells["interpretable latent space"] = f"{act.num_active} of {len(act.kl)} units active"
    loader = run.loader("test", 100, limit=nll_limit)
    what = "exact NLL" if isinstance(model, ExactLikelihood) else f"IS NLL, k={nll_samples}"
    with seeded(seed), Progress(len(loader.data), f"  {what}", "examples") as bar:
        measured = estimate_likelihood(model, loader.epoch(0), nll_samples, progress=bar)
    if measured is not None:
        rep, exact = measured
        what = "exact" if exact else f"IS bound, k = {nll_samples}"
        kind = likelihood_meaning_of(run).kind
        if run.config.get("prior_of"):
            kind = "of the VQ-VAE's code grids, not of images"
        cells["efficient likelihood"] = (f"NLL {rep.nll:.2f} nats ({what}; {kind}), "
                                         f"{1000 * rep.seconds / rep.num_examples:.1f} ms/example")
    return {c: cells.get(c, "✗ " + _why_not(run, c)) for c in CRITERIA}


def _why_not(run, criterion: str) -> str:
    """Why a model has no measurement for a criterion (the ✗ of the lectures' table)."""
    model = run.model
    if criterion in ("efficient sampling", "high-quality samples", "coverage"):
        return "no prior to sample from"
    if criterion == "efficient likelihood":
        return "no likelihood"
    if run.config.get("prior_of"):
        return "discrete code grid: no continuous latent space"
    if isinstance(model, ExactLikelihood):
        return "no latent variables"
    if criterion == "interpretable latent space":
        return "no N(0, I) prior to measure unit activity against"
    return "no latent space"


def scorecard(runs, n: int = SCORECARD_N, seed: int = 0, extractor=None, device: str = "cpu",
              nll_samples: int = 100, nll_limit: int = 1000) -> Scorecard:
    """Evaluates each run (opened or a folder) and the real test data on one data set; run folders
    are loaded onto ``device`` (cpu, cuda, cuda:N), and the feature extractor runs there too. The
    likelihood row: exact where the model has one, else importance-sampled with ``nll_samples``, on
    the first ``nll_limit`` test examples."""
    from .core.compute import resolve_device
    from .training import Run, load_run

    dev = resolve_device(device)
    runs = [r if isinstance(r, Run) else load_run(r, map_location=str(dev)) for r in runs]
    if not runs:
        raise ConfigError("give at least one run")
    sources = {r.data_spec.source for r in runs if not r.config.get("prior_of")}
    for r in runs:
        if r.config.get("prior_of"):
            sources.add(load_run(r.config["prior_of"]).data_spec.source)
    if len(sources) != 1:
        raise ConfigError(f"the runs were trained on different data ({', '.join(sorted(sources))}); "
                          f"a scorecard compares models of one data set")
    data = sources.pop()
    ext = extractor if isinstance(extractor, Extractor) else load_extractor(extractor if extractor is not None else data)
    if not isinstance(extractor, Extractor):      # the shipped LeNet follows the device; yours stays where it is
        ext.module.to(dev)
    splits = runs[0].data() if not runs[0].config.get("prior_of") else load_run(runs[0].config["prior_of"]).data()
    if n > min(len(splits.test), len(splits.train)):
        raise ConfigError(f"N = {n} is more than the real data offer ({len(splits.train)} training, "
                          f"{len(splits.test)} test images): choose N <= {min(len(splits.test), len(splits.train))}")
    rng = np.random.default_rng(seed)
    train_x = splits.train.x[rng.choice(len(splits.train), n, replace=False)]
    test_x = splits.test.x[:n]
    real_train = ext.features(train_x)
    card = Scorecard(data, n, f"{ext.name} ({ext.module.__class__.__name__} features)")
    real = _quality_cells(ext, real_train, test_x)
    real["efficient sampling"] = "(data)"
    card.add("real test data", data, n, card.extractor, real)
    with Progress(len(runs), "scorecard", "runs") as bar:
        for r in runs:
            label = r.model.describe() + (f" [{Path(r.path).name}]" if r.path is not None else "")
            bar.write(f"scorecard: {label}: sampling {n}, quality, latent space, likelihood")
            card.add(label, data, n, card.extractor,
                     evaluate_run(r, ext, real_train, n, seed, nll_samples, nll_limit))
            bar.update(1)
    return card
