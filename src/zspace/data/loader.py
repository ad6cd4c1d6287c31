"""Batches, position-addressable so that training can stop and resume bit for bit.

Each epoch's order is a permutation fixed by (seed, epoch); each batch's random
preprocessing (binarization, dequantization) is fixed by (seed, epoch, batch, rank). So
batch b of epoch e is the same whether the run went straight through or resumed, and
whether it was read in this process or by ``workers`` loader processes. With
``world_size > 1`` every rank takes its own stride of the same permutation
(DistributedSampler's scheme): two ranks never read the same rows in an epoch.

Data read from disk (memory-mapped ``.npy``, shard stores) is shuffled in blocks: the
order of blocks of ``block_rows`` consecutive rows is random, and rows are shuffled within
each window of ``window_blocks`` consecutive blocks of that order. Reads then walk a few
contiguous regions of the file at a time instead of jumping over all of it, which keeps
an epoch over data larger than memory near the disk's streaming speed (the same idea as
the shuffle buffers of activation stores for sparse autoencoders).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..errors import ConfigError
from .dataset import Dataset
from .transforms import Preprocessing, batch_seed

BLOCK_BYTES = 8 << 20      # bytes per shuffle block of on-disk data
WINDOW_BLOCKS = 8          # blocks whose rows are shuffled together


@dataclass
class Batch:
    x: torch.Tensor              # (B, *shape) preprocessed inputs
    y: torch.Tensor | None       # (B,) int64 labels
    index: np.ndarray            # (B,) positions in the data set
    skipped: int = 0             # unreadable examples left out of this batch (skip_bad sources)

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return Batch(self.x.to(device, non_blocking=non_blocking),
                     None if self.y is None else self.y.to(device, non_blocking=non_blocking),
                     self.index, self.skipped)

    def pin_memory(self) -> "Batch":   # called by torch's DataLoader with pin_memory=True
        return Batch(self.x.pin_memory(), None if self.y is None else self.y.pin_memory(),
                     self.index, self.skipped)


def block_permutation(n: int, rng: np.random.Generator, block_rows: int, window_blocks: int) -> np.ndarray:
    """A permutation of range(n) that is random at the block level and within windows."""
    starts = np.arange(0, n, block_rows)
    blocks = rng.permutation(len(starts))
    out = []
    for w in range(0, len(blocks), window_blocks):
        rows = np.concatenate([np.arange(starts[b], min(n, starts[b] + block_rows))
                               for b in blocks[w:w + window_blocks]])
        out.append(rows[rng.permutation(len(rows))])
    return np.concatenate(out)


class _EpochBatches(torch.utils.data.Dataset):
    """Batch numbers start.. of one epoch as a map-style dataset, for DataLoader workers."""

    def __init__(self, loader: "BatchLoader", epoch: int, start: int):
        self.loader, self.epoch, self.start = loader, epoch, start
        self.order = loader._order(epoch)

    def __len__(self):
        return len(self.loader) - self.start

    def __getitem__(self, i):
        return self.loader._batch(self.order, self.epoch, self.start + i)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)      # decoding workers must not compete with training for cores


class BatchLoader:
    """Batches of ``data`` (any Dataset) preprocessed for a model.

    ``workers`` > 0 reads and preprocesses batches in that many processes (torch's
    DataLoader, batches still in order). ``block_rows`` sets on-disk block shuffling (None:
    about 8 MiB of rows for on-disk data, rows for data in memory; 0 turns it off).
    """

    def __init__(self, data: Dataset, batch_size: int, preprocessing: Preprocessing, *,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, workers: int = 0,
                 block_rows: int | None = None, pin_memory: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ConfigError(f"workers must be an integer >= 0, got {workers!r}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} outside world of size {world_size}")
        if world_size > len(data):
            raise ConfigError(f"{data.name}: {len(data)} examples cannot be shared by {world_size} ranks")
        preprocessing.check(data)
        self.data, self.batch_size, self.pre = data, batch_size, preprocessing
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size, self.workers = rank, world_size, workers
        self.pin_memory = pin_memory
        if block_rows is None:
            block_rows = max(1, BLOCK_BYTES // max(1, data.num_features * data.dtype.itemsize)) \
                if data.on_disk else 0
        self.block_rows = int(block_rows)
        self.skipped = 0                  # unreadable examples left out so far (skip_bad sources)

    def _order(self, epoch: int) -> np.ndarray:
        n = len(self.data)
        if not self.shuffle:
            order = np.arange(n)
        elif self.block_rows:
            order = block_permutation(n, np.random.default_rng([self.seed, epoch]),
                                      self.block_rows, WINDOW_BLOCKS)
        else:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
        if self.world_size > 1:  # pad so every rank gets the same number of batches
            per_rank = math.ceil(n / self.world_size)
            order = np.resize(order, per_rank * self.world_size)[self.rank::self.world_size]
        return order

    def __len__(self) -> int:
        n = math.ceil(len(self.data) / self.world_size)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _batch(self, order: np.ndarray, epoch: int, b: int) -> Batch:
        if self.block_rows and b:       # a window of on-disk rows is done: unmap its pages
            window = self.block_rows * WINDOW_BLOCKS
            if (b * self.batch_size) // window != ((b - 1) * self.batch_size) // window:
                self.data.release()
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        g = torch.Generator().manual_seed(batch_seed(self.seed, epoch, b, self.rank))
        raw, kept = self.data.read_batch(idx)
        skipped = len(idx) - len(kept)
        idx = idx[kept] if skipped else idx
        x = self.pre(raw, idx, g)
        labels = self.data.y
        y = None if labels is None else torch.from_numpy(labels[idx])
        return Batch(x, y, idx, skipped)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch``, beginning at batch number ``start``."""
        if self.workers == 0:
            order = self._order(epoch)
            batches = (self._batch(order, epoch, b) for b in range(start, len(self)))
        else:
            batches = iter(torch.utils.data.DataLoader(
                _EpochBatches(self, epoch, start), batch_size=None, shuffle=False,
                num_workers=self.workers, worker_init_fn=_one_thread, pin_memory=self.pin_memory,
                prefetch_factor=4))
        for batch in batches:
            self.skipped += batch.skipped
            yield batch

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)
