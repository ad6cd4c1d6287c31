"""Encoder and decoder networks built from a config's architecture fields.

Shared by every model that maps x -> vector -> x (autoencoders, VAEs), so the
variants differ only in what they put in the middle.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..nn import MLP, NORMS, ConvDecoder, ConvEncoder, ResNetDecoder, ResNetEncoder
from ..nn.resnet import check_resnet_shape

ARCHITECTURES = ("mlp", "conv", "resnet")
IMAGE_ARCHITECTURES = ("conv", "resnet")   # (C, H, W) inputs; a label enters as constant planes


def check_architecture(cfg) -> None:
    if cfg.architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {cfg.architecture!r}; choose mlp, conv or resnet")
    if cfg.architecture in IMAGE_ARCHITECTURES and len(cfg.input_shape) != 3:
        raise ConfigError(f"architecture {cfg.architecture!r} needs image inputs (C, H, W), got shape {cfg.input_shape}")
    if cfg.architecture in IMAGE_ARCHITECTURES and not cfg.channels:
        raise ConfigError(f"architecture {cfg.architecture!r} needs at least one stage of channels "
                          f"(e.g. --channels 32,64)")
    if any(int(h) < 1 for h in (cfg.hidden if cfg.architecture == "mlp" else cfg.channels)):
        raise ConfigError("layer widths must be positive integers")
    if cfg.architecture == "resnet":
        blocks, norm = getattr(cfg, "blocks", 1), getattr(cfg, "norm", "group")
        if not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 0:
            raise ConfigError(f"blocks (residual blocks per stage) must be an integer >= 0, got {blocks!r}")
        if norm not in NORMS:
            raise ConfigError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
        check_resnet_shape(cfg.input_shape, len(cfg.channels))


def _resnet_options(cfg) -> dict:
    return dict(blocks=getattr(cfg, "blocks", 1), norm=getattr(cfg, "norm", "group"), act=cfg.activation)


def build_encoder(cfg, out_dim: int, dropout: float = 0.0) -> nn.Module:
    if cfg.architecture == "resnet":
        return ResNetEncoder(cfg.input_shape, cfg.channels, out_dim, **_resnet_options(cfg))
    if cfg.architecture == "conv":
        return ConvEncoder(cfg.input_shape, cfg.channels, out_dim, cfg.activation)
    return MLP(math.prod(cfg.input_shape), cfg.hidden, out_dim, cfg.activation, dropout)


def build_decoder(cfg, params_per_dim: int = 1, dropout: float = 0.0) -> nn.Module:
    """z (B, latent_dim) -> (B, P*C, H, W) for conv and resnet or (B, P*D) for mlp."""
    shape: Sequence[int] = cfg.input_shape
    if cfg.architecture == "resnet":
        return ResNetDecoder(cfg.latent_dim, cfg.channels, (params_per_dim * shape[0], *shape[1:]),
                             **_resnet_options(cfg))
    if cfg.architecture == "conv":
        out_shape = (params_per_dim * shape[0], *shape[1:])
        return ConvDecoder(cfg.latent_dim, cfg.channels, out_shape, cfg.activation,
                           getattr(cfg, "upsample", "transpose"))
    return MLP(cfg.latent_dim, tuple(cfg.hidden)[::-1], params_per_dim * math.prod(shape),
               cfg.activation, dropout)


def build_spatial_encoder(cfg, out_channels: int) -> nn.Module:
    """(B, C, H, W) -> (B, out_channels, H/2^S, W/2^S) residual trunk (a VQ-VAE's encoder)."""
    net = ResNetEncoder(cfg.input_shape, cfg.channels, None, spatial=True, **_resnet_options(cfg))
    return nn.Sequential(net, nn.Conv2d(int(cfg.channels[-1]), out_channels, 1))


def build_spatial_decoder(cfg, in_channels: int, params_per_dim: int = 1) -> nn.Module:
    """(B, in_channels, h, w) grid -> (B, P*C, H, W): the mirror of :func:`build_spatial_encoder`."""
    shape = cfg.input_shape
    return ResNetDecoder(in_channels, cfg.channels, (params_per_dim * shape[0], *shape[1:]), spatial=True,
                         **_resnet_options(cfg))


class ClassRouted(nn.Module):
    """One network per class behind one interface: the input carries its one-hot label in its
    last ``num_classes`` features (or channel planes, ``planes=True``); each row goes through
    its class's network without the label, and the outputs come back in the input's order.
    A conditional VAE built from these is one VAE per class (p(x | y) = VAE_y(x))."""

    def __init__(self, nets, num_classes: int, planes: bool = False):
        super().__init__()
        if len(nets) != num_classes:
            raise ValueError("one network per class")
        self.nets, self.num_classes, self.planes = nn.ModuleList(nets), num_classes, planes

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        k = self.num_classes
        x, onehot = inp[:, :-k], (inp[:, -k:, 0, 0] if self.planes else inp[:, -k:])
        idx = onehot.argmax(1)
        order = torch.argsort(idx, stable=True)
        counts = torch.bincount(idx, minlength=k).tolist()
        parts = x[order].split(counts)
        out = torch.cat([self.nets[c](part) for c, part in enumerate(parts) if len(part)])
        return out[torch.argsort(order)]
