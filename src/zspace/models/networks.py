"""Encoder and decoder networks built from a config's architecture fields.

Shared by every model that maps x -> vector -> x (autoencoders, VAEs), so the
variants differ only in what they put in the middle.
"""
from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from ..errors import ConfigError
from ..nn import MLP, ConvDecoder, ConvEncoder

ARCHITECTURES = ("mlp", "conv")


def check_architecture(cfg) -> None:
    if cfg.architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {cfg.architecture!r}; choose mlp or conv")
    if cfg.architecture == "conv" and len(cfg.input_shape) != 3:
        raise ConfigError(f"architecture 'conv' needs image inputs (C, H, W), got shape {cfg.input_shape}")
    if cfg.architecture == "conv" and not cfg.channels:
        raise ConfigError("architecture 'conv' needs at least one stage of channels (e.g. --channels 32,64)")
    if any(int(h) < 1 for h in (cfg.hidden if cfg.architecture == "mlp" else cfg.channels)):
        raise ConfigError("layer widths must be positive integers")


def build_encoder(cfg, out_dim: int, dropout: float = 0.0) -> nn.Module:
    if cfg.architecture == "conv":
        return ConvEncoder(cfg.input_shape, cfg.channels, out_dim, cfg.activation)
    return MLP(math.prod(cfg.input_shape), cfg.hidden, out_dim, cfg.activation, dropout)


def build_decoder(cfg, params_per_dim: int = 1, dropout: float = 0.0) -> nn.Module:
    """z (B, latent_dim) -> (B, P*C, H, W) for conv or (B, P*D) for mlp."""
    shape: Sequence[int] = cfg.input_shape
    if cfg.architecture == "conv":
        out_shape = (params_per_dim * shape[0], *shape[1:])
        return ConvDecoder(cfg.latent_dim, cfg.channels, out_shape, cfg.activation,
                           getattr(cfg, "upsample", "transpose"))
    return MLP(cfg.latent_dim, tuple(cfg.hidden)[::-1], params_per_dim * math.prod(shape),
               cfg.activation, dropout)
