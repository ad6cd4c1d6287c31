"""Deterministic autoencoder on the same networks as the VAE: x -> code -> x_hat."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Losses, Model, ModelConfig, check_positive_int, register
from .networks import build_decoder, build_encoder, check_architecture

AE_LOSSES = ("mse", "bce")


@dataclass(frozen=True)
class AutoencoderConfig(ModelConfig):
    input_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 32                 # code size
    architecture: str = "mlp"
    hidden: tuple[int, ...] = (512, 256)
    channels: tuple[int, ...] = (32, 64)
    activation: str = "relu"
    upsample: str = "transpose"
    reconstruction_loss: str = "mse"     # "mse" (per-dimension mean) or "bce" (nats, summed)

    def __post_init__(self):
        check_positive_int("latent_dim", self.latent_dim)
        if self.reconstruction_loss not in AE_LOSSES:
            raise ConfigError(f"reconstruction_loss must be one of {', '.join(AE_LOSSES)}")
        check_architecture(self)


@register
class Autoencoder(Model):
    name = "ae"
    config_class = AutoencoderConfig

    def __init__(self, config: AutoencoderConfig, encoder: nn.Module | None = None,
                 decoder: nn.Module | None = None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else build_encoder(config, config.latent_dim)
        self.decoder = decoder if decoder is not None else build_decoder(config)
        self.custom_networks = encoder is not None or decoder is not None

    def describe(self) -> str:
        c = self.config
        return f"AE, {c.architecture}, code={c.latent_dim}, {c.reconstruction_loss}"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_logits(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code).reshape(-1, *self.config.input_shape)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Reconstruction in [0, 1] (sigmoid output)."""
        return torch.sigmoid(self.decode_logits(code))

    def loss(self, x, y=None, warmup: float = 1.0) -> Losses:
        logits = self.decode_logits(self.encode(x))
        mse = ((torch.sigmoid(logits) - x) ** 2).flatten(1).mean(1)
        if self.config.reconstruction_loss == "bce":
            bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
            return Losses(bce.mean(), {"bce": bce.detach(), "mse": mse.detach()})
        return Losses(mse.mean(), {"mse": mse.detach()})

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)
