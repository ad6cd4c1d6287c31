"""The dataset contract, and the in-memory / memory-mapped array source.

Every source (arrays, memory-mapped ``.npy``, sharded stores, image folders and zips) is a
:class:`Dataset`: ``len``, ``example_shape``, ``dtype`` (uint8 for 8-bit images, float32
for real features), optional labels ``y`` (N,) int64 held in memory, and
``read(indices) -> (B, *example_shape)`` which loads only the rows asked for. Splits and
subsets are :class:`Subset` index views and ``DataSplits.all()`` a :class:`Concat` view:
nothing is copied until a batch is read.

Validation happens where the data is read. Arrays handed over in memory are checked once,
whole (cheap, and the error comes at once); memory-mapped and on-disk sources check each
batch as it is read (NaN/Inf, integer range, decoding) and name the file and row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError

WHOLE_READ_LIMIT = 2 << 30   # bytes: ``Dataset.x`` refuses to load more than this at once


class Dataset:
    """The contract every source fulfils (see module docstring)."""

    name: str = "data"

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def example_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def dtype(self) -> np.dtype:
        """dtype of what ``read`` returns: uint8 (8-bit images) or float32."""
        raise NotImplementedError

    @property
    def y(self) -> np.ndarray | None:
        """(N,) int64 labels, or None."""
        return None

    @property
    def classes(self) -> tuple[str, ...] | None:
        """Names of the label values 0..K-1, where the source knows them."""
        return None

    def read(self, indices) -> np.ndarray:
        """Rows ``indices`` (B,) as one validated array (B, *example_shape)."""
        x, kept = self.read_batch(indices)
        if len(kept) != len(np.asarray(indices)):
            raise DataError(f"{self.name}: {len(np.asarray(indices)) - len(kept)} unreadable example(s)")
        return x

    def read_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(x, kept): like ``read``, but a source that skips bad examples (image folders with
        ``skip_bad``) returns only the readable rows; ``kept`` are their positions in ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        return self.read(idx), np.arange(len(idx))

    # ---- derived ----------------------------------------------------------------------
    @property
    def is_8bit(self) -> bool:
        return self.dtype == np.uint8

    @property
    def num_features(self) -> int:
        return int(math.prod(self.example_shape))

    @property
    def nbytes(self) -> int:
        return len(self) * self.num_features * np.dtype(self.dtype).itemsize

    @property
    def on_disk(self) -> bool:
        """True when rows are read from disk: the loader then reads in blocks (see loader)."""
        return False

    @property
    def x(self) -> np.ndarray:
        """Every example as one array: for data that fits in memory (use ``read`` otherwise)."""
        if self.nbytes > WHOLE_READ_LIMIT:
            raise DataError(f"{self.name}: {self.nbytes / 2**30:.1f} GiB is too large to load whole; "
                            f"read it in batches (BatchLoader) instead")
        return self.read(np.arange(len(self)))

    def subset(self, indices) -> "Subset":
        return Subset(self, indices)

    def head(self, n: int) -> "Dataset":
        return self.subset(np.arange(min(n, len(self))))

    def value_range(self, limit: int | None = None, batch_size: int = 4096) -> tuple[float, float]:
        """(min, max) over the first ``limit`` examples (all if None), read in batches."""
        n = len(self) if limit is None else min(limit, len(self))
        lo, hi = math.inf, -math.inf
        for start in range(0, n, batch_size):
            x = self.read(np.arange(start, min(n, start + batch_size)))
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
        return lo, hi

    def sampled_range(self, rows: int = 4096) -> tuple[float, float]:
        """(min, max) of everything held in memory, or of the first ``rows`` of on-disk data
        (whose every batch is checked again as it is read)."""
        return self.value_range(limit=rows if self.on_disk else None)

    def release(self) -> None:
        """Lets go of memory-mapped pages read so far (the loader calls this as it moves on),
        so streaming over data larger than memory keeps resident memory flat."""

    def describe(self) -> str:
        labels = "" if self.y is None else f", {len(np.unique(self.y))} classes"
        return f"{self.name}: {len(self)} x {self.example_shape} {np.dtype(self.dtype).name}{labels}"


# ---- arrays ------------------------------------------------------------------------------------
def channels_last_view(arr: np.ndarray) -> np.ndarray:
    """(N, H, W, C) images with C in {1, 3, 4} become an (N, C, H, W) view (no copy)."""
    if arr.ndim == 4 and arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        return arr.transpose(0, 3, 1, 2)
    return arr


def _check_shape(arr: np.ndarray, name: str) -> None:
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
    if arr.ndim == 4 and arr.shape[1] > 4 and arr.shape[-1] > 4:
        raise DataError(f"{name}: 4-D array of shape {arr.shape} is neither (N, C, H, W) nor (N, H, W, C) "
                        f"images with 1, 3 or 4 channels; reshape it to one of those")


def checked_values(x: np.ndarray, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    """x validated and converted to float32 or uint8; ``rows`` (the examples' row numbers)
    let an error name the first bad row."""
    def first_bad(mask: np.ndarray) -> str:
        if rows is None:
            return ""
        return f" (first at row {int(rows[int(np.argmax(mask.reshape(len(x), -1).any(1)))])})"

    if x.dtype.kind == "f":
        if x.dtype.itemsize <= 4:
            if x.dtype == np.float16 and x.flags.writeable and x.flags.c_contiguous:
                x = torch.from_numpy(x).float().numpy()   # numpy widens half floats one by one: 14x slower
            with np.errstate(invalid="ignore"):            # inf - inf: NaN, which is the answer wanted
                total = x.sum(dtype=np.float64)             # exact: a float64 sum of float32s cannot overflow
            if np.isfinite(total):
                return x.astype(np.float32, copy=False)
        bad = ~np.isfinite(x)
        if bad.any():
            raise DataError(f"{name}: {int(bad.sum())} NaN or infinite values{first_bad(bad)}")
        if x.dtype.itemsize > 4:   # float64 beyond float32's range would turn into inf below
            big = np.abs(x) > np.finfo(np.float32).max
            if big.any():
                raise DataError(f"{name}: {int(big.sum())} values beyond float32's range "
                                f"(|x| > 3.4e38){first_bad(big)}; rescale the data")
        return x.astype(np.float32, copy=False)
    if x.dtype != np.uint8:
        lo, hi = x.min(), x.max()
        if lo < 0 or hi > 255:
            raise DataError(
                f"{name}: integer values must lie in [0, 255] to be read as 8-bit pixels, "
                f"found [{lo}, {hi}]{first_bad((x < 0) | (x > 255))}; pass floats for other features"
            )
        return x.astype(np.uint8)
    return x


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
    _check_shape(arr, name)
    arr = channels_last_view(arr)
    if not isinstance(arr, np.memmap) and not isinstance(getattr(arr, "base", None), np.memmap):
        arr = checked_values(arr, name)     # in memory: checked whole, now
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


def _lazy(arr: np.ndarray) -> bool:
    return isinstance(arr, np.memmap) or isinstance(getattr(arr, "base", None), np.memmap)


def release_mapping(arr: np.ndarray) -> None:
    """madvise(DONTNEED) on the mapping behind ``arr``: its pages leave this process's resident
    set (the kernel's page cache keeps them while it has room); a later read maps them again."""
    import mmap

    while arr is not None and not isinstance(getattr(arr, "_mmap", None), mmap.mmap):
        arr = getattr(arr, "base", None)
    if arr is not None and hasattr(mmap, "MADV_DONTNEED"):
        try:
            arr._mmap.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


class ArrayData(Dataset):
    """Examples ``x`` (N, *shape) and optional labels ``y`` (N,): in memory, or a NumPy memmap
    (any numeric dtype, float16 included), which is read and checked batch by batch.

    ``ArrayData(x, y)`` takes arrays as they are; ``from_arrays`` validates and converts."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None = None, name: str = "array",
                 classes: tuple[str, ...] | None = None):
        self._x, self._y, self.name = x, y, name
        self._classes = None if classes is None else tuple(classes)

    @classmethod
    def from_arrays(cls, x, y=None, name: str = "array", classes=None) -> "ArrayData":
        arr = _as_example_array(x, name)
        return cls(arr, _as_labels(y, len(arr), name), name, classes)

    def __len__(self) -> int:
        return len(self._x)

    @property
    def x(self) -> np.ndarray:
        return self._x

    @property
    def y(self):
        return self._y

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self._x.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self._x.dtype.kind == "f" else np.dtype(np.uint8)

    @property
    def classes(self):
        return self._classes

    @property
    def on_disk(self) -> bool:
        return _lazy(self._x)

    def release(self) -> None:
        release_mapping(self._x)

    def read(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        if not _lazy(self._x):
            return self._x[idx]
        order = np.argsort(idx, kind="stable")      # ascending reads walk the file forwards
        rows = np.empty((len(idx), *self.example_shape), self._x.dtype)
        rows[order] = self._x[idx[order]]
        return checked_values(rows, self.name, idx)


# ---- views -------------------------------------------------------------------------------------
class Subset(Dataset):
    """Rows ``indices`` of ``base``: an index view, never a copy of the examples."""

    def __init__(self, base: Dataset, indices, name: str | None = None):
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(base)):
            raise DataError(f"{base.name}: subset indices outside [0, {len(base)})")
        if isinstance(base, Subset):                      # compose, so views never nest deeply
            base, idx = base.base, base.indices[idx]
        self.base, self.indices = base, idx
        self.name = name or base.name
        self._y = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def example_shape(self):
        return self.base.example_shape

    @property
    def dtype(self):
        return self.base.dtype

    @property
    def classes(self):
        return self.base.classes

    @property
    def on_disk(self) -> bool:
        return self.base.on_disk

    @property
    def y(self):
        if self._y is None and self.base.y is not None:
            self._y = self.base.y[self.indices]
        return self._y

    def release(self) -> None:
        self.base.release()

    def read(self, indices) -> np.ndarray:
        return self.base.read(self.indices[np.asarray(indices, dtype=np.int64)])

    def read_batch(self, indices):
        return self.base.read_batch(self.indices[np.asarray(indices, dtype=np.int64)])


class Concat(Dataset):
    """Several datasets of one example shape and dtype, end to end (a view)."""

    def __init__(self, parts: list[Dataset], name: str | None = None):
        self.parts = list(parts)
        self.name = name or self.parts[0].name
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self._y = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def example_shape(self):
        return self.parts[0].example_shape

    @property
    def dtype(self):
        return self.parts[0].dtype

    @property
    def classes(self):
        return self.parts[0].classes

    @property
    def on_disk(self) -> bool:
        return any(p.on_disk for p in self.parts)

    def release(self) -> None:
        for p in self.parts:
            p.release()

    @property
    def y(self):
        if self._y is None and all(p.y is not None for p in self.parts):
            self._y = np.concatenate([p.y for p in self.parts])
        return self._y

    def read_batch(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        rows, positions = [], []
        for p in np.unique(which):
            pos = np.nonzero(which == p)[0]
            x, kept = self.parts[p].read_batch(idx[pos] - self.offsets[p])
            rows.append(x)
            positions.append(pos[kept])
        if not rows:
            return np.zeros((0, *self.example_shape), self.dtype), np.zeros(0, np.int64)
        pos = np.concatenate(positions)
        order = np.argsort(pos, kind="stable")
        return np.concatenate(rows)[order], pos[order]


@dataclass(frozen=True)
class DataSplits:
    """A named data set with a training and a test split of the same example shape."""

    train: Dataset
    test: Dataset
    name: str
    source: str | None = None   # how load_dataset can load it again (name or absolute path)

    def __post_init__(self):
        if self.train.example_shape != self.test.example_shape:
            raise DataError(
                f"{self.name}: training examples have shape {self.train.example_shape} "
                f"but test examples {self.test.example_shape}"
            )
        if self.train.dtype != self.test.dtype:
            raise DataError(
                f"{self.name}: training data is {self.train.dtype} but test data {self.test.dtype}"
            )

    def split(self, name: str) -> Dataset:
        if name == "all":
            return self.all()
        if name not in ("train", "test"):
            raise DataError(f"unknown split {name!r}; choose 'train', 'test' or 'all'")
        return self.train if name == "train" else self.test

    def all(self) -> Dataset:
        """Training then test examples in one set (a view)."""
        return Concat([self.train, self.test], self.name)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return self.train.example_shape
