"""Deterministic autoencoders: x -> code -> x_hat, on the same networks as the VAE.

One model, the ways of forcing structure on the code the lectures list as options:
a bottleneck (``latent_dim``), noise (``corruption``: denoising, Vincent et al. 2008),
``dropout`` inside encoder and decoder, and sparsity (``sparsity``: an L1 penalty on
ReLU codes, or the KL target-sparsity penalty on sigmoid codes,
sum_j rho log(rho / rho_hat_j) + (1 - rho) log((1 - rho) / (1 - rho_hat_j)) with
rho_hat_j the mini-batch mean activation of unit j; Ng, CS294A notes). ``PRESETS`` name
the classic variants; explicit options override a preset's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..data.corruptions import CORRUPTIONS, make_corruption
from ..errors import ConfigError
from ..nn import activation
from .base import Losses, Model, ModelConfig, Statistic, check_positive_int, register
from .capabilities import ContinuousCode, Reconstructs
from .networks import build_decoder, build_encoder, check_architecture

AE_LOSSES = ("mse", "bce")
CODE_ACTIVATIONS = ("none", "relu", "leaky-relu", "sigmoid", "tanh")
SPARSITY = ("none", "l1", "kl")

PRESETS: dict[str, dict] = {
    # The classic Keras MNIST example: 784 -> 32 (leaky ReLU) -> 784 (sigmoid).
    "basic": dict(hidden=(), latent_dim=32, code_activation="leaky-relu", output_activation="sigmoid"),
    # Linear encoder and decoder with squared error: spans the top principal subspace.
    "linear": dict(hidden=(), code_activation="none", output_activation="none", reconstruction_loss="mse"),
    "conv": dict(architecture="conv", channels=(32, 64)),
    "denoising": dict(architecture="conv", channels=(32, 64), corruption="gaussian", corruption_level=0.3),
    "denoising-masking": dict(architecture="conv", channels=(32, 64), corruption="masking", corruption_level=0.3),
    "denoising-salt-and-pepper": dict(architecture="conv", channels=(32, 64), corruption="salt-and-pepper",
                                      corruption_level=0.2),
    "denoising-dropout": dict(architecture="conv", channels=(32, 64), corruption="dropout", corruption_level=0.3),
    # One model for every noise level up to 0.5, with a wider code (a denoiser, not a compressor).
    "denoiser": dict(architecture="conv", channels=(32, 64), latent_dim=256, corruption="gaussian-blind",
                     corruption_level=0.5),
    "dropout": dict(hidden=(512, 256), dropout=0.2),
    "sparse-l1": dict(code_activation="relu", sparsity="l1", sparsity_weight=1e-4),
    "sparse-kl": dict(code_activation="sigmoid", sparsity="kl", sparsity_target=0.05, sparsity_weight=3e-3),
}


@dataclass(frozen=True)
class AutoencoderConfig(ModelConfig):
    input_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 32                 # code size
    preset: str = "none"                 # a classic variant's options (PRESETS); explicit options override them
    architecture: str = "mlp"
    hidden: tuple[int, ...] = (512, 256)
    channels: tuple[int, ...] = (32, 64)
    blocks: int = 1                      # resnet: residual blocks per stage
    norm: str = "group"                  # resnet: "group", "batch" or "none"
    activation: str = "relu"
    upsample: str = "transpose"
    code_activation: str = "none"
    output_activation: str = "sigmoid"   # "sigmoid" for data in [0, 1], "none" for a linear output
    reconstruction_loss: str = "mse"     # "mse" (mean per dimension) or "bce" (nats, summed)
    dropout: float = 0.0                 # inside the MLP encoder and decoder
    corruption: str = "none"             # denoising: gaussian, masking, salt-and-pepper, dropout
    corruption_level: float = 0.0        # noise std, or the fraction of dimensions corrupted
    sparsity: str = "none"               # "l1" (ReLU codes) or "kl" (sigmoid codes)
    sparsity_weight: float = 0.0
    sparsity_target: float = 0.05        # rho of the KL penalty

    @classmethod
    def resolve(cls, options: dict) -> dict:
        preset = options.get("preset", "none")
        if preset != "none" and preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        return {**PRESETS.get(preset, {}), **options}

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "AutoencoderConfig":
        """The preset's options, with ``overrides`` on top."""
        return cls.from_dict({**overrides, "preset": preset})

    def __post_init__(self):
        check_positive_int("latent_dim", self.latent_dim)
        check_architecture(self)
        if self.latent_dim > math.prod(self.input_shape):
            raise ConfigError(f"code size {self.latent_dim} is larger than the input "
                              f"({math.prod(self.input_shape)} dimensions): nothing forces structure on it")
        for name, value, allowed in (("reconstruction_loss", self.reconstruction_loss, AE_LOSSES),
                                     ("code_activation", self.code_activation, CODE_ACTIVATIONS),
                                     ("output_activation", self.output_activation, ("sigmoid", "none")),
                                     ("sparsity", self.sparsity, SPARSITY),
                                     ("corruption", self.corruption, tuple(CORRUPTIONS))):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.reconstruction_loss == "bce" and self.output_activation != "sigmoid":
            raise ConfigError("reconstruction_loss 'bce' needs output_activation 'sigmoid'")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.sparsity_weight < 0 or not math.isfinite(self.sparsity_weight):
            raise ConfigError(f"sparsity_weight must be >= 0, got {self.sparsity_weight}")
        if not 0.0 < self.sparsity_target < 1.0:
            raise ConfigError(f"sparsity target rho must lie in (0, 1), got {self.sparsity_target}")
        if self.sparsity == "kl" and self.code_activation != "sigmoid":
            raise ConfigError("the KL sparsity penalty needs sigmoid codes (code_activation 'sigmoid')")
        make_corruption(self.corruption, self.corruption_level)  # validates the level


def kl_sparsity(rho: float, rho_hat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """sum_j KL(Bernoulli(rho) || Bernoulli(rho_hat_j)) in nats; rho_hat (units,)."""
    r = rho_hat.clamp(eps, 1 - eps)
    return (rho * torch.log(rho / r) + (1 - rho) * torch.log((1 - rho) / (1 - r))).sum()


def _sparsity_kl_of_sums(rho: float, total: torch.Tensor) -> torch.Tensor:
    """The KL sparsity penalty of the mean activations, from (sum of codes per unit..., count)."""
    return kl_sparsity(rho, total[:-1] / total[-1])


@register
class Autoencoder(Model, ContinuousCode, Reconstructs):
    """Deterministic autoencoder trained on reconstruction error; presets give the basic, linear,
    conv, denoising, dropout and sparse variants."""

    name = "ae"
    warms_up = True
    config_class = AutoencoderConfig

    def __init__(self, config: AutoencoderConfig, encoder: nn.Module | None = None,
                 decoder: nn.Module | None = None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else build_encoder(config, config.latent_dim, config.dropout)
        self.decoder = decoder if decoder is not None else build_decoder(config, dropout=config.dropout)
        self.code_act = nn.Identity() if config.code_activation == "none" else activation(config.code_activation)
        self.corrupt = make_corruption(config.corruption, config.corruption_level)
        self.custom_networks = encoder is not None or decoder is not None

    def describe(self) -> str:
        c = self.config
        what = f"AE ({c.preset})" if c.preset != "none" else "AE"
        return f"{what}, {c.architecture}, code={c.latent_dim}, {c.reconstruction_loss}"

    # ``y`` (labels) is accepted everywhere for a uniform interface with conditional models.
    def encode(self, x: torch.Tensor, y=None) -> torch.Tensor:
        return self.code_act(self.encoder(x))

    def decode_raw(self, code: torch.Tensor) -> torch.Tensor:
        """Decoder output before the output activation (logits for sigmoid outputs)."""
        return self.decoder(code).reshape(-1, *self.config.input_shape)

    def decode(self, code: torch.Tensor, y=None) -> torch.Tensor:
        out = self.decode_raw(code)
        return torch.sigmoid(out) if self.config.output_activation == "sigmoid" else out

    @torch.no_grad()
    def decode_mean(self, code: torch.Tensor, y=None) -> torch.Tensor:
        """The reconstruction in input space for codes (B, latent_dim)."""
        return self.decode(code)

    def forward(self, x, y=None, warmup: float = 1.0) -> Losses:
        c = self.config
        stats = {}
        x_in = self.corrupt(x) if self.training else x      # the clean x stays the target
        code = self.encode(x_in)
        raw = self.decode_raw(code)
        x_hat = torch.sigmoid(raw) if c.output_activation == "sigmoid" else raw
        mse = ((x_hat - x) ** 2).flatten(1).mean(1)
        terms = {"mse": mse.detach()}
        if c.reconstruction_loss == "bce":
            rec = F.binary_cross_entropy_with_logits(raw, x, reduction="none").flatten(1).sum(1)
            terms["bce"] = rec.detach()
        else:
            rec = mse
        loss = rec.mean()
        if c.sparsity == "l1":
            l1 = code.abs().sum(1)
            loss = loss + c.sparsity_weight * warmup * l1.mean()
            terms["code_l1"] = l1.detach()
        elif c.sparsity == "kl":
            penalty = kl_sparsity(c.sparsity_target, code.mean(0))
            loss = loss + c.sparsity_weight * warmup * penalty
            terms["sparsity_kl"] = penalty.detach().expand(len(x))    # this batch's; stats: exact
            stats["sparsity_kl"] = Statistic(torch.cat([code.detach().sum(0), code.new_tensor([len(x)])]),
                                             partial(_sparsity_kl_of_sums, c.sparsity_target))
        terms["code_zero_fraction"] = (code.detach().abs() < 1e-3).float().mean(1)
        return Losses(loss, terms, stats)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def embed(self, x: torch.Tensor, y=None) -> torch.Tensor:
        return self.encode(x)
