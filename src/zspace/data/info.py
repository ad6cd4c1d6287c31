"""What ``zspace data info`` and ``zspace data pack`` do: streaming statistics, and
conversion of any source into shard stores (one per split) so later runs read fast.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ..core.progress import Progress

from ..errors import DataError
from .dataset import Dataset, DataSplits
from .shards import ShardStore, ShardWriter, is_store


@dataclass
class SplitStats:
    """Statistics of one split, computed in one streaming pass (float64 sums)."""

    name: str
    count: int
    example_shape: tuple[int, ...]
    dtype: str
    minimum: float
    maximum: float
    mean: list[float]            # per channel for images (C, H, W), else one overall value
    std: list[float]
    classes: dict[str, int] = field(default_factory=dict)   # label name -> count
    skipped: int = 0             # unreadable examples left out (skip_bad sources)

    def lines(self) -> list[str]:
        fmt = lambda v: ", ".join(f"{x:.4g}" for x in v)  # noqa: E731
        out = [f"{self.name}: {self.count} examples of shape {self.example_shape}, {self.dtype}",
               f"  range [{self.minimum:.4g}, {self.maximum:.4g}], mean {fmt(self.mean)}, std {fmt(self.std)}"
               + (" (per channel)" if len(self.mean) > 1 else "")]
        if self.classes:
            out.append(f"  {len(self.classes)} classes: "
                       + ", ".join(f"{k} {v}" for k, v in list(self.classes.items())[:20])
                       + (" ..." if len(self.classes) > 20 else ""))
        if self.skipped:
            out.append(f"  {self.skipped} unreadable examples skipped")
        return out


def split_stats(data: Dataset, batch_size: int = 1024, progress: bool = True) -> SplitStats:
    shape = tuple(data.example_shape)
    per_channel = len(shape) == 3
    channels = shape[0] if per_channel else 1
    s1, s2 = np.zeros(channels), np.zeros(channels)
    lo, hi, seen, skipped = np.inf, -np.inf, 0, 0
    with Progress(len(data), data.name, "examples", enabled=progress) as bar:
        for start in range(0, len(data), batch_size):
            idx = np.arange(start, min(len(data), start + batch_size))
            x, kept = data.read_batch(idx)
            skipped += len(idx) - len(kept)
            if len(x):
                v = x.astype(np.float64).reshape(len(x), channels, -1)
                s1 += v.sum(axis=(0, 2))
                s2 += (v ** 2).sum(axis=(0, 2))
                lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
                seen += len(x)
            bar.update(len(idx))
    if seen == 0:
        raise DataError(f"{data.name}: no readable examples")
    per = seen * (int(np.prod(shape)) // channels)
    mean = s1 / per
    std = np.sqrt(np.maximum(s2 / per - mean ** 2, 0.0))
    classes = {}
    if data.y is not None:
        values, counts = np.unique(data.y, return_counts=True)
        names = data.classes
        classes = {(names[v] if names is not None and v < len(names) else str(v)): int(c)
                   for v, c in zip(values, counts)}
    return SplitStats(data.name, seen, shape, np.dtype(data.dtype).name, lo, hi, mean.tolist(),
                      std.tolist(), classes, skipped)


def pack_split(data: Dataset, out: Path, *, rows_per_shard: int = 65536, dtype: str | None = None,
               batch_size: int = 1024, metadata: dict | None = None, progress: bool = True) -> ShardStore:
    """Writes ``data`` in order into a shard store at ``out``; an interrupted pack resumes."""
    dtype = dtype or ("uint8" if data.is_8bit else "float32")
    columns = {"y": "int64"} if data.y is not None else {}
    meta = {"source": data.name, **(metadata or {})}
    if data.classes is not None:
        meta["classes"] = list(data.classes)
    writer = ShardWriter(out, data.example_shape, dtype, columns=columns, rows_per_shard=rows_per_shard,
                         metadata=meta, resume=is_store(out))
    done = writer.rows
    if done > len(data):
        raise DataError(f"{out}: holds {done} rows but the source has only {len(data)}; "
                        f"is it a pack of another source?")
    with Progress(len(data), f"pack {data.name}", "examples", initial=done, enabled=progress) as bar:
        for start in range(done, len(data), batch_size):
            idx = np.arange(start, min(len(data), start + batch_size))
            x = data.read(idx)
            writer.append(x, **({"y": data.y[idx]} if columns else {}))
            bar.update(len(idx))
    store = writer.close()
    if store is None or len(store) != len(data):
        raise DataError(f"{out}: pack ended with {0 if store is None else len(store)} of {len(data)} rows")
    return store


def pack(splits: DataSplits, out: str | Path, **options) -> dict[str, ShardStore]:
    """Both splits into OUT/train and OUT/test (``load_dataset(OUT)`` reads them back)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    if out.is_dir() and any(p.name not in ("train", "test") for p in out.iterdir()):
        raise DataError(f"{out} holds other files; pack into a new or empty folder")
    return {name: pack_split(splits.split(name), out / name,
                             metadata={"split": name, "dataset": splits.name,
                                       "source": splits.source}, **options)
            for name in ("train", "test")}
