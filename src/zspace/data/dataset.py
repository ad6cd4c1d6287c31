"""In-memory data sets: validated arrays of examples with optional labels.

An :class:`ArrayData` holds ``x`` of shape (N, *example_shape), either uint8 in
[0, 255] (images) or float32 (any real features), and ``y`` (N,) int64 labels or None.
Everything is validated on construction, so a model never sees NaN, an empty set
or mismatched lengths. ``x`` may be a NumPy memmap: nothing here reads it whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


def _as_example_array(x, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
        except (TypeError, ValueError) as e:
            raise DataError(f"{name}: cannot be read as a numeric array ({e})") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype.kind not in "uif":
        raise DataError(f"{name}: dtype {arr.dtype} is not numeric (need uint8 or float)")
    if arr.ndim < 2:
        raise DataError(
            f"{name}: need at least 2 dimensions (examples, features...), got shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise DataError(f"{name}: empty (0 examples)")
    if int(np.prod(arr.shape[1:])) == 0:
        raise DataError(f"{name}: examples have no features (shape {arr.shape})")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise DataError(f"{name}: {int(bad.sum())} NaN or infinite values")
        arr = arr.astype(np.float32, copy=False)
    elif arr.dtype != np.uint8:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi > 255:
            raise DataError(
                f"{name}: integer values must lie in [0, 255] to be read as 8-bit pixels, "
                f"found [{lo}, {hi}]; pass floats for other features"
            )
        arr = arr.astype(np.uint8)
    if arr.ndim == 3:  # (N, H, W) grayscale images gain a channel axis
        arr = arr[:, None]
    return arr


def _as_labels(y, n: int, name: str) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{name}: labels must be one-dimensional, got shape {y.shape}")
    if len(y) != n:
        raise DataError(f"{name}: {n} examples but {len(y)} labels")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{name}: labels must be whole numbers")
    elif y.dtype.kind not in "ui":
        raise DataError(f"{name}: labels must be integers, got dtype {y.dtype}")
    return y.astype(np.int64)


@dataclass(frozen=True)
class ArrayData:
    """Validated examples ``x`` (N, *shape) and optional labels ``y`` (N,)."""

    x: np.ndarray
    y: np.ndarray | None = None
    name: str = "array"

    @classmethod
    def from_arrays(cls, x, y=None, name: str = "array") -> "ArrayData":
        arr = _as_example_array(x, name)
        return cls(arr, _as_labels(y, len(arr), name), name)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def is_8bit(self) -> bool:
        return self.x.dtype == np.uint8

    def subset(self, indices) -> "ArrayData":
        idx = np.asarray(indices)
        return ArrayData(self.x[idx], None if self.y is None else self.y[idx], self.name)

    def head(self, n: int) -> "ArrayData":
        return self.subset(np.arange(min(n, len(self))))


@dataclass(frozen=True)
class DataSplits:
    """A named data set with a training and a test split of the same example shape."""

    train: ArrayData
    test: ArrayData
    name: str
    source: str | None = None   # how load_dataset can load it again (name or absolute path)

    def __post_init__(self):
        if self.train.example_shape != self.test.example_shape:
            raise DataError(
                f"{self.name}: training examples have shape {self.train.example_shape} "
                f"but test examples {self.test.example_shape}"
            )
        if self.train.x.dtype != self.test.x.dtype:
            raise DataError(
                f"{self.name}: training data is {self.train.x.dtype} but test data {self.test.x.dtype}"
            )

    def split(self, name: str) -> ArrayData:
        if name == "all":
            return self.all()
        if name not in ("train", "test"):
            raise DataError(f"unknown split {name!r}; choose 'train', 'test' or 'all'")
        return self.train if name == "train" else self.test

    def all(self) -> ArrayData:
        """Training then test examples in one set."""
        y = (None if self.train.y is None or self.test.y is None
             else np.concatenate([self.train.y, self.test.y]))
        return ArrayData(np.concatenate([self.train.x, self.test.x]), y, self.name)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return self.train.example_shape
