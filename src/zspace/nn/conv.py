"""Strided-convolution encoder and transposed-convolution decoder for small images.

Each stage halves (encoder) or doubles (decoder) height and width with a 4x4 kernel,
stride 2 and padding 1; a linear layer joins the feature map to the code. Sizes that
do not halve evenly (28 -> 14 -> 7) are restored exactly by ``output_padding``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .mlp import activation


def _stage_sizes(size: int, stages: int) -> list[int]:
    sizes = [size]
    for _ in range(stages):
        sizes.append((sizes[-1] + 2 - 4) // 2 + 1)
    if sizes[-1] < 1:
        raise ConfigError(f"image side {size} is too small for {stages} stride-2 stages")
    return sizes


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_dim)."""

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int], out_dim: int,
                 act: str = "relu"):
        super().__init__()
        if len(in_shape) != 3:
            raise ConfigError(f"a convolutional encoder needs (C, H, W) inputs, got shape {tuple(in_shape)}")
        c, h, w = in_shape
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c, c_out, 4, stride=2, padding=1), activation(act)]
            c = c_out
        self.features = nn.Sequential(*layers)
        hs, ws = _stage_sizes(h, len(channels)), _stage_sizes(w, len(channels))
        self.head = nn.Linear(c * hs[-1] * ws[-1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """(B, in_dim) -> (B, out_channels, H, W); mirrors :class:`ConvEncoder`."""

    def __init__(self, in_dim: int, channels: Sequence[int], out_shape: Sequence[int],
                 act: str = "relu", upsample: str = "transpose"):
        super().__init__()
        if len(out_shape) != 3:
            raise ConfigError(f"a convolutional decoder needs (C, H, W) outputs, got shape {tuple(out_shape)}")
        if upsample not in ("transpose", "nearest"):
            raise ConfigError(f"upsample must be 'transpose' or 'nearest', got {upsample!r}")
        c_out, h, w = out_shape
        chans = list(channels)[::-1]
        hs, ws = _stage_sizes(h, len(chans)), _stage_sizes(w, len(chans))
        self.start = (chans[0], hs[-1], ws[-1])
        self.head = nn.Linear(in_dim, chans[0] * hs[-1] * ws[-1])
        layers: list[nn.Module] = [activation(act)]
        targets = list(zip(hs[-2::-1], ws[-2::-1]))
        for i, (th, tw) in enumerate(targets):
            c_in = chans[i]
            c_next = chans[i + 1] if i + 1 < len(chans) else c_out
            last = i == len(targets) - 1
            if upsample == "transpose":
                ph = th - ((hs[-1 - i] - 1) * 2 - 2 + 4)
                pw = tw - ((ws[-1 - i] - 1) * 2 - 2 + 4)
                layers.append(nn.ConvTranspose2d(c_in, c_next, 4, stride=2, padding=1,
                                                 output_padding=(ph, pw)))
            else:
                layers += [nn.Upsample(size=(th, tw), mode="nearest"),
                           nn.Conv2d(c_in, c_next, 3, padding=1)]
            if not last:
                layers.append(activation(act))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.head(z).view(-1, *self.start))
