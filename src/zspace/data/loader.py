"""Batches, position-addressable so that training can stop and resume bit for bit.

Each epoch's order is a permutation fixed by (seed, epoch); each batch's random
preprocessing (binarization, dequantization) is fixed by (seed, epoch, batch). So
batch b of epoch e is the same whether the run went straight through or resumed.
With ``world_size > 1`` every rank takes its own stride of the same permutation
(DistributedSampler's scheme), so the same code serves torchrun.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..errors import ConfigError
from .dataset import ArrayData
from .transforms import Preprocessing, batch_seed


@dataclass
class Batch:
    x: torch.Tensor              # (B, *shape) preprocessed inputs
    y: torch.Tensor | None       # (B,) int64 labels
    index: np.ndarray            # (B,) positions in the data set

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device) -> "Batch":
        return Batch(self.x.to(device), None if self.y is None else self.y.to(device), self.index)


class BatchLoader:
    def __init__(self, data: ArrayData, batch_size: int, preprocessing: Preprocessing, *,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} outside world of size {world_size}")
        preprocessing.check(data)
        self.data, self.batch_size, self.pre = data, batch_size, preprocessing
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size

    def _order(self, epoch: int) -> np.ndarray:
        n = len(self.data)
        order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                 else np.arange(n))
        if self.world_size > 1:  # pad so every rank gets the same number of batches
            per_rank = math.ceil(n / self.world_size)
            order = np.resize(order, per_rank * self.world_size)[self.rank::self.world_size]
        return order

    def __len__(self) -> int:
        n = math.ceil(len(self.data) / self.world_size)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch``, beginning at batch number ``start``."""
        order = self._order(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            g = torch.Generator().manual_seed(batch_seed(self.seed, epoch, b, self.rank))
            x = self.pre(self.data.x[idx], idx, g)
            y = None if self.data.y is None else torch.from_numpy(self.data.y[idx])
            yield Batch(x, y, idx)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)
