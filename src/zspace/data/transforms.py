"""Preprocessing: what the model sees of the stored examples.

``scale``            uint8 -> float32 in [0, 1]; float data must already lie in [0, 1].
``dynamic-binarize`` a fresh Bernoulli(pixel) draw for every batch of every epoch
                     (the set-up of Burda et al. 2016 for MNIST likelihoods).
``static-binarize``  one Bernoulli draw per example with a fixed seed, kept for the run.
``uint8``            8-bit integers 0..255 as int64 (for 256-way autoregressive heads).
``dequantize``       (pixel + u) / 256 with u ~ U[0, 1): continuous densities on 8-bit
                     data become lower bounds on the discrete likelihood.
``none``             float features as given (tabular data, Gaussian likelihoods).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError
from .dataset import Dataset

PREPROCESSING = ("scale", "dynamic-binarize", "static-binarize", "uint8", "dequantize", "none")
_NEEDS_UNIT_RANGE = ("scale", "dynamic-binarize", "static-binarize")


def batch_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (seed, epoch, batch, ...)."""
    return int(np.random.SeedSequence([k & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


class Preprocessing:
    """Turns stored examples into model inputs, deterministically given a generator."""

    def __init__(self, name: str = "scale", static_seed: int = 0):
        if name not in PREPROCESSING:
            raise DataError(f"unknown preprocessing {name!r}; choose one of {', '.join(PREPROCESSING)}")
        self.name = name
        self.static_seed = static_seed

    def check(self, data: Dataset) -> None:
        """Raises DataError when ``data`` cannot be preprocessed this way. Data held in memory
        is checked whole; on-disk data on its first rows here, and every batch as it is read."""
        if self.name in ("uint8", "dequantize") and not data.is_8bit:
            raise DataError(f"{data.name}: preprocessing {self.name!r} needs 8-bit (uint8) data, "
                            f"got {np.dtype(data.dtype).name}")
        if self.name in _NEEDS_UNIT_RANGE and not data.is_8bit:
            self._check_unit_range(*data.sampled_range(), data.name)

    def _check_unit_range(self, lo: float, hi: float, where: str) -> None:
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{where}: values lie in [{lo:.4g}, {hi:.4g}] but preprocessing "
                f"{self.name!r} needs [0, 1]; rescale them, or use 'none' for real-valued features"
            )

    def static_draw(self, x_unit: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
        """Static binarization: the draw for example i depends only on (static_seed, i)."""
        out = torch.empty_like(x_unit)
        for row, i in enumerate(indices):
            g = torch.Generator().manual_seed(batch_seed(self.static_seed, int(i)))
            out[row] = (torch.rand(x_unit[row].shape, generator=g) < x_unit[row]).to(x_unit.dtype)
        return out

    def __call__(self, x: np.ndarray, indices: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        """x: (B, *shape) stored examples at dataset positions ``indices``."""
        t = torch.from_numpy(np.ascontiguousarray(x))
        if self.name == "uint8":
            return t.long()
        if self.name == "none":
            return t.float()
        if self.name == "dequantize":
            # Kept strictly inside pixel p's bin [p/256, (p+1)/256) despite float32 rounding.
            lo = t.float() / 256.0
            top = torch.nextafter((t.float() + 1.0) / 256.0, torch.zeros(()))
            return torch.minimum(lo + torch.rand(t.shape, generator=generator) / 256.0, top)
        if t.dtype == torch.uint8:
            unit = t.float() / 255.0
        else:
            unit = t.float()
            if len(unit):
                self._check_unit_range(float(unit.min()), float(unit.max()),
                                       f"examples {int(indices.min())}..{int(indices.max())}")
        if self.name == "dynamic-binarize":
            return (torch.rand(unit.shape, generator=generator) < unit).float()
        if self.name == "static-binarize":
            return self.static_draw(unit, indices)
        return unit
