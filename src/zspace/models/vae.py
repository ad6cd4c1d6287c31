"""Variational autoencoder (Kingma & Welling 2014), β-VAE (Higgins et al. 2017), the
importance-weighted bound (IWAE, Burda et al. 2016) and the conditional VAE (Sohn et al.
2015) on one model.

    q(z|x) = N(mu(x), diag sigma^2(x))      encoder -> DiagonalGaussian
    p(x|z) = Bernoulli / Gaussian           decoder -> DecoderLikelihood
    ELBO   = E_q[log p(x|z)] - KL(q || N(0, I))          (closed-form KL)
    IWAE_k = E[log 1/k sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)

The conditional VAE (``cvae``) gives encoder and decoder a one-hot label y as well:
q(z|x, y), p(x|z, y), prior N(0, I); its likelihoods are then of p(x|y). Every method
takes ``y``; an unconditional model ignores it. All quantities are in nats per example.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.corruptions import check_fraction
from ..distributions import DecoderLikelihood, DiagonalGaussian, LIKELIHOODS, standard_normal_log_prob
from ..errors import ConfigError, DataError
from .base import (Losses, Model, ModelConfig, check_labelled_data, check_positive, check_positive_int,
                   checked_labels, register)
from .capabilities import ImportanceSampledLikelihood, Reconstructs, SamplesFromPrior
from .networks import IMAGE_ARCHITECTURES, ClassRouted, build_decoder, build_encoder, check_architecture


@dataclass(frozen=True)
class VAEConfig(ModelConfig):
    input_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 32
    architecture: str = "mlp"            # "mlp", "conv" or "resnet" (residual, for colour images)
    hidden: tuple[int, ...] = (512, 256)  # MLP widths, encoder order; the decoder mirrors them
    channels: tuple[int, ...] = (32, 64)  # conv channels per stride-2 stage
    blocks: int = 1                       # resnet: residual blocks per stage
    norm: str = "group"                   # resnet: "group", "batch" or "none"
    activation: str = "relu"
    upsample: str = "transpose"          # conv decoder: "transpose" or "nearest"
    likelihood: str = "bernoulli"        # "bernoulli", "gaussian-fixed", "gaussian-learned", "logistic"
    variance: float = 1.0                # c of gaussian-fixed; C = 1/(2c) weighs the squared error
    mixtures: int = 1                    # logistic: components of the discretized logistic mixture
    beta: float = 1.0                    # weight on the KL (β-VAE); 1 is the true ELBO
    iw_samples: int = 1                  # k > 1 trains the IWAE bound with k samples
    # Ren et al. (2019)'s background model for likelihood ratios: during training this
    # fraction of input dimensions is replaced by random levels (inputs and targets alike).
    input_mutation: float = 0.0
    # > 0: beta-TCVAE (Chen et al. 2018) with this weight on the total correlation; the KL is
    # split into index-code MI + TC + dimension-wise KL by minibatch-weighted sampling.
    tc_weight: float = 0.0

    def __post_init__(self):
        if not self.input_shape or any(int(s) < 1 for s in self.input_shape):
            raise ConfigError(f"input_shape must be positive sizes, got {self.input_shape}")
        check_positive_int("latent_dim", self.latent_dim)
        check_positive_int("iw_samples", self.iw_samples)
        check_positive("beta", self.beta)
        check_positive("variance", self.variance)
        check_positive_int("mixtures", self.mixtures)
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"unknown likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        check_fraction("input_mutation", self.input_mutation)
        if not (isinstance(self.tc_weight, (int, float)) and math.isfinite(self.tc_weight) and self.tc_weight >= 0):
            raise ConfigError(f"tc_weight must be >= 0, got {self.tc_weight!r}")
        if self.tc_weight and (self.beta != 1.0 or self.iw_samples > 1):
            raise ConfigError("beta-TCVAE (tc_weight > 0) weighs the total correlation itself: "
                              "use beta = 1 and iw_samples = 1")
        if self.iw_samples > 1 and self.beta != 1.0:
            raise ConfigError("the IWAE bound (iw_samples > 1) is defined for beta = 1 only")
        check_architecture(self)


@register
class VAE(Model, ImportanceSampledLikelihood, SamplesFromPrior, Reconstructs):
    """Variational autoencoder (Kingma & Welling 2014): Gaussian q(z|x), N(0, I) prior, a decoder
    likelihood of choice, trained on the ELBO (also beta-VAE, IWAE and beta-TCVAE)."""

    name = "vae"
    warms_up = True
    config_class = VAEConfig

    def __init__(self, config: VAEConfig, encoder: nn.Module | None = None,
                 decoder: nn.Module | None = None):
        """``encoder``: x (B, *input_shape) -> (B, 2 * latent_dim) [mean, log-variance];
        ``decoder``: z (B, latent_dim) -> likelihood parameters, (B, P * prod(input_shape))
        or (B, P * C, H, W), with P = 2 for gaussian-learned and 1 otherwise."""
        super().__init__(config)
        self.likelihood = DecoderLikelihood(config.likelihood, config.variance, config.mixtures)
        k, shape = self.num_classes, tuple(config.input_shape)
        # A label enters the encoder as k extra input channels (conv) or features (mlp),
        # and the decoder as k extra latent inputs.
        enc_cfg = config if not k else config.replace(
            input_shape=(shape[0] + k, *shape[1:]) if config.architecture in IMAGE_ARCHITECTURES else (math.prod(shape) + k,))
        dec_cfg = config if not k else config.replace(latent_dim=config.latent_dim + k)
        self.custom_networks = encoder is not None or decoder is not None
        if k and getattr(config, "per_class", False):    # one VAE per class behind the same interface
            planes = config.architecture in IMAGE_ARCHITECTURES
            enc_cfg = dec_cfg = None
            encoder = encoder if encoder is not None else ClassRouted(
                [build_encoder(config, 2 * config.latent_dim) for _ in range(k)], k, planes=planes)
            decoder = decoder if decoder is not None else ClassRouted(
                [build_decoder(config, self.likelihood.params_per_dim) for _ in range(k)], k)
        self.encoder = encoder if encoder is not None else build_encoder(enc_cfg, 2 * config.latent_dim)
        self.decoder = decoder if decoder is not None else build_decoder(
            dec_cfg, self.likelihood.params_per_dim)
        if self.custom_networks:
            self._check_networks()

    def _check_networks(self) -> None:
        cfg = self.config
        with torch.no_grad():
            try:
                y = torch.zeros(2, dtype=torch.long) if self.num_classes else None
                h = self.encoder(self._encoder_input(torch.zeros(2, *cfg.input_shape), self.one_hot(y, 2)))
                out = self.decoder(torch.zeros(2, cfg.latent_dim + self.num_classes))
            except RuntimeError as e:
                raise ConfigError(f"injected network failed on a test batch: {e}") from None
        if tuple(h.shape) != (2, 2 * cfg.latent_dim):
            raise ConfigError(f"encoder must return (B, {2 * cfg.latent_dim}), returned {tuple(h.shape[1:])} per example")
        want = self.likelihood.params_per_dim * self.num_dims
        if out[0].numel() != want:
            raise ConfigError(f"decoder must return {want} values per example, returned {out[0].numel()}")

    def describe(self) -> str:
        c = self.config
        obj = f"IWAE k={c.iw_samples}" if c.iw_samples > 1 else ("VAE" if c.beta == 1 else f"β-VAE β={c.beta:g}")
        if c.tc_weight:
            obj = f"β-TCVAE β={c.tc_weight:g}"
        if self.num_classes:
            obj = f"C{obj} ({self.num_classes} classes)" if obj == "VAE" else f"conditional {obj} ({self.num_classes} classes)"
            if getattr(c, "per_class", False):
                obj += ", one VAE per class"
        lik = f"logistic mixture K={c.mixtures}" if c.likelihood == "logistic" and c.mixtures > 1 else c.likelihood
        return f"{obj}, {c.architecture}, z={c.latent_dim}, {lik}"

    # ---- conditioning --------------------------------------------------------------------
    def one_hot(self, y, batch: int) -> torch.Tensor | None:
        """Labels (B,) -> (B, num_classes) one-hot, checked; None for an unconditional model."""
        if not self.num_classes:
            return None
        y = checked_labels(y, batch, self.num_classes, next(self.parameters()).device, self.describe())
        return F.one_hot(y, self.num_classes).float()

    def check_data(self, data) -> None:
        if self.config.likelihood == "logistic" and not data.is_8bit:
            raise DataError(f"{data.name}: the discretized logistic likelihood is a distribution over 8-bit "
                            f"values, got {np.dtype(data.dtype).name} data; use a Gaussian likelihood")
        if self.num_classes:
            check_labelled_data(data, self.num_classes, "a conditional VAE")

    def _encoder_input(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        if c is None:
            return x
        if self.config.architecture in IMAGE_ARCHITECTURES:   # the label as constant planes
            return torch.cat([x, c[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
        return torch.cat([x.flatten(1), c], 1)

    # ---- the two distributions -------------------------------------------------------
    def encode(self, x: torch.Tensor, y=None) -> DiagonalGaussian:
        """q(z|x[, y]) for x (B, *input_shape)."""
        mean, log_var = self.encoder(self._encoder_input(x, self.one_hot(y, len(x)))).chunk(2, dim=-1)
        return DiagonalGaussian(mean, log_var)

    def decode(self, z: torch.Tensor, y=None):
        """p(x|z[, y]) for z (..., latent_dim); leading dimensions are kept, y is (B,) for z (..., B, D)."""
        lead = z.shape[:-1]
        c = self.one_hot(y, z.shape[-2] if z.dim() > 1 else 1)
        if c is not None:
            z = torch.cat([z, c.expand(*lead, self.num_classes)], -1)
        out = self.decoder(z.reshape(-1, z.shape[-1]))
        shape = self.config.input_shape
        out = out.reshape(*lead, self.likelihood.params_per_dim * shape[0], *shape[1:])
        return self.likelihood(out, event_dims=len(shape))

    # ---- objectives --------------------------------------------------------------------
    def elbo_terms(self, x: torch.Tensor, y=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q log p(x|z) with one sample, KL(q||p)), each (B,) in nats."""
        q = self.encode(x, y)
        rec = self.decode(q.rsample(), y).log_prob(x)
        return rec, q.kl_standard_normal()

    def log_importance_weights(self, x: torch.Tensor, q: DiagonalGaussian, k: int, y=None,
                               eps: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i|x) for k samples z_i ~ q; shape (k, B). ``eps`` (k, B, D):
        the standard-normal draws of z_i = mean + std * eps, when the caller fixes them."""
        if eps is None:
            eps = torch.randn((k, *q.mean.shape), dtype=q.mean.dtype, device=q.mean.device)
        eps = eps.to(q.mean)
        z = q.mean + q.std * eps                           # (k, B, D), the draws of q.rsample(k)
        log_px_z = self.decode(z, y).log_prob(x)           # x broadcasts over k
        # log p(z) - log q(z|x) with (z - mean) / std = eps: the 2 pi constants cancel
        return log_px_z + 0.5 * (q.log_var.sum(-1) - (z.square() - eps.square()).sum(-1))

    def forward(self, x, y=None, warmup: float = 1.0) -> Losses:
        x = self.training_input(x)
        k = self.config.iw_samples
        if self.config.tc_weight:
            return self._tc_loss(x, y, warmup)
        if k == 1:
            rec, kl = self.elbo_terms(x, y)
            loss = -(rec - self.config.beta * warmup * kl).mean()
            return Losses(loss, {"elbo": (rec - kl).detach(), "rec": rec.detach(), "kl": kl.detach()})
        q = self.encode(x, y)
        log_w = self.log_importance_weights(x, q, k, y)
        bound = torch.logsumexp(log_w, dim=0) - math.log(k)
        return Losses(-bound.mean(), {"iwae": bound.detach(), "elbo": log_w.mean(0).detach(),
                                      "kl": q.kl_standard_normal().detach()})

    def _tc_loss(self, x, y, warmup: float) -> Losses:
        """beta-TCVAE (Chen et al. 2018, eq. 4): -E log p(x|z) + MI + beta TC + dimension-wise KL,
        log q(z) and log prod_d q(z_d) estimated over this batch with the batch standing in for
        the data set: Chen et al.'s minibatch-weighted estimate minus constants ((D - 1) log N
        for the TC), so the gradients are theirs while the logged ``tc`` is the batch's own
        aggregate-posterior TC (it can be negative)."""
        q = self.encode(x, y)
        z = q.rsample()                                                       # (M, D)
        rec = self.decode(z, y).log_prob(x)
        m = z.shape[0]
        # log q(z_i,d | x_j): (M, M, D)
        pair = -0.5 * ((z[:, None] - q.mean[None]) ** 2 * torch.exp(-q.log_var[None]) + q.log_var[None]
                       + math.log(2 * math.pi))
        log_qz = torch.logsumexp(pair.sum(2), dim=1) - math.log(m)
        log_prod_qzd = (torch.logsumexp(pair, dim=1) - math.log(m)).sum(1)
        log_qz_x = q.log_prob(z)
        log_pz = standard_normal_log_prob(z)
        mi, tc, dwkl = log_qz_x - log_qz, log_qz - log_prod_qzd, log_prod_qzd - log_pz
        loss = -(rec - warmup * (mi + self.config.tc_weight * tc + dwkl)).mean()
        kl = q.kl_standard_normal()
        return Losses(loss, {"elbo": (rec - kl).detach(), "rec": rec.detach(), "kl": kl.detach(),
                             "tc": tc.detach()})

    # ---- uses ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, y=None, mean: bool = True) -> torch.Tensor:
        """n draws z ~ N(0, I) decoded (given labels y for a conditional model): the
        likelihood's mean (default) or a sample of x."""
        device = next(self.parameters()).device
        p = self.decode(torch.randn(n, self.config.latent_dim, device=device), y)
        return p.mean if mean else p.sample()

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """The decoder's mean in input space for codes z (B, latent_dim)."""
        return self.decode(z, y).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """Decoder mean at the posterior mean."""
        return self.decode(self.encode(x, y).mean, y).mean

    @torch.no_grad()
    def embed(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """The posterior mean, (B, latent_dim)."""
        return self.encode(x, y).mean


@dataclass(frozen=True)
class CVAEConfig(VAEConfig):
    num_classes: int = 10                # labels 0..num_classes-1, given one-hot to encoder and decoder
    per_class: bool = False              # one encoder and decoder per class (a VAE per class) instead of a one-hot input

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("num_classes", self.num_classes, minimum=2)
        if not isinstance(self.per_class, bool):
            raise ConfigError(f"per_class must be true or false, got {self.per_class!r}")


@register
class CVAE(VAE):
    """Conditional VAE (Sohn et al. 2015): encoder and decoder see the one-hot label."""

    name = "cvae"
    config_class = CVAEConfig
