from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "leaky-relu": nn.LeakyReLU, "elu": nn.ELU,
               "tanh": nn.Tanh, "softplus": nn.Softplus, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """in_dim -> hidden... -> out_dim; the activation after every hidden layer, none at the end.

    Input (B, *shape) is flattened to (B, in_dim).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int,
                 act: str = "relu", dropout: float = 0.0):
        if dropout and not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = [nn.Flatten()]
        dims = [in_dim, *hidden]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), activation(act)]
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)
