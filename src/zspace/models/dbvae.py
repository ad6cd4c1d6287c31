"""Debiasing variational autoencoder (DB-VAE, Amini et al. 2019, "Uncovering and Mitigating
Algorithmic Bias through Learned Latent Structure", AIES).

One encoder gives both a classifier's logits and q(z|x); a decoder p(x|z) reconstructs x,
so the latent space learns what varies in the inputs (colour, pose, lighting) without being
told. During training an example is drawn with probability inversely proportional to its
density in that latent space (Amini et al., eq. 4), estimated by per-dimension histograms
of the posterior means:

    W(x) ∝ prod_d 1 / (Q_d(mu_d(x)) + alpha)        Q_d: fraction of the data in mu_d's bin

so inputs of a rare kind (a colour seen in 2% of the training set) are seen more often.

Here the histograms are a running average over training batches, of codes standardized by
their running mean and spread (model buffers: saved with the weights, so a resumed run
continues exactly). ``debias_class`` restricts the VAE term, the histograms and the weights
to one class, as Amini et al. do for the faces of a face detector (the latent space then
describes faces only; the other class's examples keep weight 1 and train only the
classifier); by default every example takes part. ``sampling`` says how W acts on each uniformly
drawn batch: "resample" draws the batch's places again with replacement ∝ W (the paper's
rule, approximated inside the batch so the trainer's sampler stays the position-addressed
one), "reweight" multiplies each example's loss by W normalised to mean 1 (the same
expectation, without repeating the batch's few rare examples). ``debias=False`` is the plain
classifier + VAE at the same budget.

    loss = CE(logits, y) + vae_weight * (-ELBO(x)) / D      over the resampled (or reweighted) batch
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..distributions import DecoderLikelihood, DiagonalGaussian
from ..errors import ConfigError
from .base import Losses, check_labelled_data, check_positive, check_positive_int, checked_labels, register
from .networks import build_decoder, build_encoder
from .vae import VAE, VAEConfig

COMBINE = ("product", "max")
SAMPLING = ("resample", "reweight")


def histogram_fractions(counts: torch.Tensor) -> torch.Tensor:
    """Per-dimension bin counts (D, bins) -> the fraction of the data in each bin, (D, bins)."""
    total = counts.sum(1, keepdim=True)
    return torch.where(total > 0, counts / total.clamp_min(1e-12), torch.full_like(counts, 1 / counts.shape[1]))


def bin_index(z: torch.Tensor, low: float, high: float, bins: int) -> torch.Tensor:
    """The bin of each coordinate of z (B, D) among ``bins`` equal bins over [low, high]
    (values outside fall into the end bins), int64 (B, D)."""
    idx = torch.floor((z - low) / (high - low) * bins).long()
    return idx.clamp_(0, bins - 1)


def debiasing_weights(z: torch.Tensor, counts: torch.Tensor, low: float, high: float, alpha: float,
                      combine: str = "product") -> torch.Tensor:
    """Resampling weights of codes z (B, D) under per-dimension histograms ``counts`` (D, bins)
    over [low, high]: 1 / (Q_d(z_d) + alpha), multiplied over dimensions (Amini et al. 2019,
    eq. 4) or their maximum (``combine="max"``, as in the MIT 6.S191 lab); normalised to sum 1, (B,)."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"the smoothing alpha must be > 0, got {alpha!r}")
    if combine not in COMBINE:
        raise ConfigError(f"combine must be one of {', '.join(COMBINE)}, got {combine!r}")
    q = histogram_fractions(counts.to(z))                                # (D, bins)
    idx = bin_index(z, low, high, counts.shape[1])                       # (B, D)
    density = q.gather(1, idx.t()).t()                                   # (B, D)
    if combine == "product":
        log_w = -torch.log(density + alpha).sum(1)
        return torch.softmax(log_w, 0)
    w = (1.0 / (density + alpha))
    w = (w / w.sum(0, keepdim=True)).max(1).values                       # per-dimension normalised, as the lab
    return w / w.sum()


@dataclass(frozen=True)
class DBVAEConfig(VAEConfig):
    num_classes: int = 10        # the classifier's classes (targets, not a condition of the decoder)
    latent_dim: int = 8
    hidden: tuple[int, ...] = (256,)
    debias: bool = True          # False: the plain classifier + VAE, uniform sampling
    alpha: float = 0.01          # histogram smoothing: small alpha debiases harder
    bins: int = 10               # histogram bins per latent dimension over mean ± latent_range std
    latent_range: float = 3.0
    histogram_momentum: float = 0.99       # running average of the histograms over training batches
    combine: str = "max"         # "max" of per-dimension weights (the MIT 6.S191 lab) or their "product" (the paper)
    vae_weight: float = 1.0      # weight on -ELBO per input dimension beside the cross-entropy
    sampling: str = "resample"   # "resample" the batch ∝ W, or "reweight" each example's loss by W (mean 1)
    debias_class: int | None = None  # the one class whose latent structure is learned and evened out (Amini et al.: faces); None: all

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("num_classes", self.num_classes, minimum=2)
        check_positive_int("bins", self.bins, minimum=2)
        check_positive("alpha", self.alpha)
        check_positive("latent_range", self.latent_range)
        check_positive("vae_weight", self.vae_weight)
        if not (isinstance(self.histogram_momentum, (int, float)) and 0 <= self.histogram_momentum < 1):
            raise ConfigError(f"histogram_momentum must lie in [0, 1), got {self.histogram_momentum!r}")
        if self.combine not in COMBINE:
            raise ConfigError(f"combine must be one of {', '.join(COMBINE)}, got {self.combine!r}")
        if self.debias_class is not None and not (isinstance(self.debias_class, int)
                                                  and 0 <= self.debias_class < self.num_classes):
            raise ConfigError(f"debias_class must be a class index in 0..{self.num_classes - 1}, got {self.debias_class!r}")
        if self.sampling not in SAMPLING:
            raise ConfigError(f"sampling must be one of {', '.join(SAMPLING)}, got {self.sampling!r}")
        if self.iw_samples > 1 or self.tc_weight:
            raise ConfigError("dbvae trains the plain ELBO: leave iw_samples = 1 and tc_weight = 0")


@register
class DBVAE(VAE):
    """Debiasing VAE (Amini et al. 2019): a classifier sharing its encoder with a VAE, trained on
    inputs resampled inversely to their latent density."""

    name = "dbvae"
    config_class = DBVAEConfig

    def __init__(self, config: DBVAEConfig):
        super(VAE, self).__init__(config)                     # Model.__init__: networks built here
        self.likelihood = DecoderLikelihood(config.likelihood, config.variance, config.mixtures)
        self.encoder = build_encoder(config, 2 * config.latent_dim + config.num_classes)   # [mean, log-var, logits]
        self.decoder = build_decoder(config, self.likelihood.params_per_dim)
        self.register_buffer("histogram", torch.zeros(config.latent_dim, config.bins))
        # running mean and variance of each code dimension: the bins span mean ± latent_range std,
        # so they follow the data's spread (Amini et al. bin between each dimension's extremes)
        self.register_buffer("code_mean", torch.zeros(config.latent_dim))
        self.register_buffer("code_var", torch.ones(config.latent_dim))

    @property
    def num_classes(self) -> int:
        return 0                  # not class-conditional: the labels are the classifier's targets

    @property
    def num_targets(self) -> int:
        return int(self.config.num_classes)

    def describe(self) -> str:
        c = self.config
        how = f"resampled, alpha={c.alpha:g}" if c.debias else "uniform sampling"
        return f"DB-VAE classifier ({c.num_classes} classes, {how}), {c.architecture}, z={c.latent_dim}"

    def check_data(self, data) -> None:
        super().check_data(data)
        check_labelled_data(data, self.num_targets, "the DB-VAE classifier")

    def _heads(self, x: torch.Tensor):
        d = self.config.latent_dim
        h = self.encoder(x)
        return DiagonalGaussian(h[:, :d], h[:, d:2 * d]), h[:, 2 * d:]

    def encode(self, x: torch.Tensor, y=None):
        """q(z|x) (labels are not an input)."""
        return self._heads(x)[0]

    def decode(self, z: torch.Tensor, y=None):
        return super().decode(z, None)

    @torch.no_grad()
    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's logits, (B, num_classes)."""
        return self._heads(x)[1]

    def standardized(self, mean: torch.Tensor) -> torch.Tensor:
        """Posterior means (B, latent_dim) in units of the running spread of each dimension."""
        return (mean - self.code_mean) / self.code_var.clamp_min(1e-12).sqrt()

    def latent_weights(self, mean: torch.Tensor) -> torch.Tensor:
        """Resampling probabilities (B,), summing to 1, of posterior means (B, latent_dim) under
        the running histograms."""
        c = self.config
        return debiasing_weights(self.standardized(mean), self.histogram, -c.latent_range, c.latent_range,
                                 c.alpha, c.combine)

    def _update_statistics(self, mean: torch.Tensor) -> None:
        """Running moments, then running histograms of the standardized codes, of a uniform batch."""
        c, m = self.config, self.config.histogram_momentum
        fresh = bool(self.histogram.sum() == 0)
        mu, var = mean.mean(0), mean.var(0, unbiased=False) if len(mean) > 1 else torch.ones_like(self.code_var)
        self.code_mean.copy_(mu if fresh else m * self.code_mean + (1 - m) * mu)
        self.code_var.copy_(var if fresh else m * self.code_var + (1 - m) * var)
        idx = bin_index(self.standardized(mean), -c.latent_range, c.latent_range, c.bins)       # (B, D)
        counts = torch.zeros_like(self.histogram).scatter_add_(1, idx.t(), torch.ones_like(idx.t(), dtype=self.histogram.dtype))
        frac = counts / len(mean)
        self.histogram.copy_(frac if fresh else m * self.histogram + (1 - m) * frac)

    def forward(self, x, y=None, warmup: float = 1.0) -> Losses:
        c = self.config
        y = checked_labels(y, len(x), self.num_targets, x.device, "the DB-VAE classifier")
        q, logits = self._heads(x)
        weight = None
        if self.training:
            uniform = q.mean.detach()       # the histograms describe the data, not the resampled batch
            group = (torch.ones_like(y, dtype=torch.bool) if c.debias_class is None else y == c.debias_class)
            rows = group.nonzero().squeeze(1)                 # the examples whose density is learned and used
            if c.debias and len(rows) and bool(self.histogram.sum() > 0):
                w = self.latent_weights(uniform[rows])        # sums to 1 over the group
                if c.sampling == "reweight":                  # each loss x W, mean 1 over the group
                    weight = torch.ones(len(x), dtype=w.dtype, device=w.device).index_copy_(0, rows, w * len(rows))
                else:                                         # the group's places drawn again, ∝ W
                    pick = torch.arange(len(x), device=x.device)
                    pick[rows] = rows[torch.multinomial(w, len(rows), replacement=True)]   # global RNG: checkpointed
                    x, y, logits = x[pick], y[pick], logits[pick]
                    q = type(q)(q.mean[pick], q.log_var[pick])
            if len(rows):
                self._update_statistics(uniform[rows])
        ce = F.cross_entropy(logits, y, reduction="none")
        rec = self.decode(q.rsample()).log_prob(x)
        kl = q.kl_standard_normal()
        elbo = rec - kl
        vae = (rec - c.beta * warmup * kl) / self.num_dims
        if c.debias_class is not None:        # the latent structure is the class's own (Amini et al.: faces only)
            vae = vae * (y == c.debias_class).to(vae.dtype)
        per = ce - c.vae_weight * vae
        loss = (per * weight).mean() if weight is not None else per.mean()
        acc = (logits.argmax(1) == y).double()
        return Losses(loss, {"ce": ce.detach(), "accuracy": acc, "elbo": elbo.detach(),
                             "rec": rec.detach(), "kl": kl.detach()})
