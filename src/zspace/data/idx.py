"""Reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al.), gzip or plain.

Layout: two zero bytes, a type code, the number of dimensions n, then n big-endian
uint32 sizes, then the data in big-endian C order. Every part is checked.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..core.io import regular_file_size
from ..errors import DataError

_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_bytes(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parses an IDX byte string into a native-endian array."""
    if len(raw) < 4:
        raise DataError(f"{source}: not an IDX file (only {len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{source}: bad IDX magic number {raw[:4].hex()} (must start with 0000)")
    code, ndim = raw[2], raw[3]
    if code not in _TYPES:
        raise DataError(f"{source}: unknown IDX data type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{source}: IDX file declares zero dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: IDX header truncated (needs {header} bytes, file has {len(raw)})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _TYPES[code]
    expected = _data_bytes(dims, dtype)
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{source}: IDX data {what}: dimensions {dims} need {expected} bytes, found {actual}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _data_bytes(dims: tuple[int, ...], dtype: np.dtype) -> int:
    n = dtype.itemsize
    for d in dims:   # Python integers: a product of 32-bit sizes must not wrap around
        n *= d
    return n


def read_idx(path: str | Path) -> np.ndarray:
    """Reads an IDX file (``.gz`` is decompressed) into a native-endian array.

    The header is read first and only the bytes it declares (plus one, to detect trailing
    data) are read after it, so a bad header or an endless stream is refused, not read."""
    path = Path(path)
    size = regular_file_size(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        gz = head == b"\x1f\x8b"
        with (gzip.open if gz else open)(path, "rb") as f:
            raw = f.read(4)
            if len(raw) == 4 and raw[0] == raw[1] == 0 and raw[2] in _TYPES:
                raw += f.read(4 * raw[3])
                if len(raw) == 4 + 4 * raw[3] and raw[3] > 0:
                    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(raw[3]))
                    need = _data_bytes(dims, _TYPES[raw[2]])
                    if not gz and need != size - len(raw):
                        what = "truncated" if size - len(raw) < need else "has trailing bytes"
                        raise DataError(f"{path}: IDX data {what}: dimensions {dims} need {need} bytes, "
                                        f"found {size - len(raw)}")
                    if need > 1 << 34:   # 16 GiB: far beyond any IDX set; a damaged header
                        raise DataError(f"{path}: IDX header declares dimensions {dims} ({need} bytes); "
                                        f"damaged header?")
                    raw += f.read(need + 1)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as e:   # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    return read_idx_bytes(raw, str(path))
