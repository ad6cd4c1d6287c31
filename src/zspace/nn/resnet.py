"""Residual convolutional encoder and decoder for colour images (32x32, 64x64, 28x20, ...).

Each stage runs ``blocks`` pre-activation residual blocks (norm -> act -> 3x3 conv, twice,
plus the identity; He et al. 2016) at its width, then halves (encoder: 4x4 conv, stride 2)
or doubles (decoder: nearest-neighbour upsampling and a 3x3 conv, free of the checkerboard
of transposed convolutions) height and width. Any H and W divisible by 2^stages work, so
28x20 Frey faces take two stages (7x5 at the bottom) as CIFAR's 32x32 takes three (4x4).

Normalisation: GroupNorm (default) normalises each example on its own, so a batch's
log-likelihoods are per-example numbers in training and evaluation alike. BatchNorm mixes
the batch while training (the ELBO of an example then depends on its batch-mates) and uses
running statistics in ``eval()``; every zspace evaluation runs in eval mode, so its NLLs stay
per-example, but a model scored in train mode, or on k importance samples stacked into one
batch in train mode, would not be.

Shapes: encoder (B, C, H, W) -> (B, out_dim); decoder (B, in_dim) -> (B, C_out, H, W).
``spatial=True`` stops the encoder at the feature grid (B, channels[-1], H/2^S, W/2^S) and
starts the decoder from one, as a VQ-VAE needs.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .mlp import activation

NORMS = ("group", "batch", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """GroupNorm with up to 32 groups (a divisor of ``channels``), BatchNorm2d, or nothing."""
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 32), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def check_resnet_shape(shape: Sequence[int], stages: int) -> tuple[int, int]:
    """(H, W) at the bottom of ``stages`` halvings of an image (C, H, W); ConfigError otherwise."""
    if len(shape) != 3:
        raise ConfigError(f"a residual conv network needs image inputs (C, H, W), got shape {tuple(shape)}")
    if stages < 1:
        raise ConfigError("a residual conv network needs at least one stage of channels (e.g. --channels 64,128)")
    f = 2 ** stages
    _, h, w = shape
    if h % f or w % f:
        raise ConfigError(f"{stages} stride-2 stages need H and W divisible by {f}, got {h}x{w}: "
                          f"use fewer stages (--channels) or resize the images")
    return h // f, w // f


class ResidualBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))), width kept; (B, C, H, W) -> same."""

    def __init__(self, channels: int, norm: str = "group", act: str = "relu"):
        super().__init__()
        self.body = nn.Sequential(norm_layer(norm, channels), activation(act),
                                  nn.Conv2d(channels, channels, 3, padding=1),
                                  norm_layer(norm, channels), activation(act),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_dim), or the feature grid (B, channels[-1], h, w) if spatial."""

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int], out_dim: int | None,
                 blocks: int = 1, norm: str = "group", act: str = "relu", spatial: bool = False):
        super().__init__()
        chans = [int(c) for c in channels]
        h, w = check_resnet_shape(in_shape, len(chans))
        if blocks < 0:
            raise ConfigError(f"blocks per stage must be >= 0, got {blocks}")
        layers: list[nn.Module] = [nn.Conv2d(in_shape[0], chans[0], 3, padding=1)]
        for i, c in enumerate(chans):
            layers += [ResidualBlock(c, norm, act) for _ in range(blocks)]
            layers.append(nn.Conv2d(c, chans[min(i + 1, len(chans) - 1)], 4, stride=2, padding=1))
        layers += [norm_layer(norm, chans[-1]), activation(act)]
        self.features = nn.Sequential(*layers)
        self.grid = (chans[-1], h, w)
        self.head = None if spatial else nn.Linear(chans[-1] * h * w, int(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)                                 # (B, channels[-1], h, w)
        return f if self.head is None else self.head(f.flatten(1))


class ResNetDecoder(nn.Module):
    """(B, in_dim) -> (B, C_out, H, W), or from a grid (B, in_dim, h, w) if spatial; mirrors
    :class:`ResNetEncoder` (widths in reverse)."""

    def __init__(self, in_dim: int, channels: Sequence[int], out_shape: Sequence[int],
                 blocks: int = 1, norm: str = "group", act: str = "relu", spatial: bool = False):
        super().__init__()
        chans = [int(c) for c in channels][::-1]
        h, w = check_resnet_shape(out_shape, len(chans))
        if blocks < 0:
            raise ConfigError(f"blocks per stage must be >= 0, got {blocks}")
        self.start = (chans[0], h, w)
        self.head = (nn.Conv2d(in_dim, chans[0], 3, padding=1) if spatial
                     else nn.Linear(in_dim, chans[0] * h * w))
        self.spatial = spatial
        layers: list[nn.Module] = []
        for i, c in enumerate(chans):
            layers += [ResidualBlock(c, norm, act) for _ in range(blocks)]
            nxt = chans[min(i + 1, len(chans) - 1)]
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, nxt, 3, padding=1)]
        layers += [norm_layer(norm, chans[-1]), activation(act), nn.Conv2d(chans[-1], out_shape[0], 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.head(z) if self.spatial else self.head(z).view(-1, *self.start)
        return self.body(h)
