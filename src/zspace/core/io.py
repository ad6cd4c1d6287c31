"""Atomic writes: a file or a folder appears complete or not at all.

A file is written under a temporary name in its folder, flushed, fsynced and renamed
into place; a folder is filled under a temporary name, every file fsynced, and renamed
into place (the folder it replaces is removed only after the new one is complete).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import tokenize
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ..errors import CheckpointError, ConfigError, DataError, ZspaceError

MAX_JSON_BYTES = 64 << 20   # run configs, states and manifests are kilobytes; a bigger one is damage


def regular_file_size(path: Path, error: type[ZspaceError] = DataError) -> int:
    """The size of ``path`` after following links; refuses what is not a regular file (a FIFO
    would block forever, /dev/zero reads without end, a folder is not a file)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: not a regular file (a device, pipe or socket); give a file")
    return st.st_size


# What numpy raises on a damaged .npy header or body besides OSError/ValueError: the header is a
# Python literal (SyntaxError, tokenize's TokenError), a short body (EOFError), a huge shape.
NPY_ERRORS = (OSError, ValueError, EOFError, SyntaxError, TypeError, MemoryError, OverflowError,
               KeyError, tokenize.TokenError)


def load_npy(path: Path, error: type[ZspaceError] = DataError, mmap: bool = True):
    """A ``.npy`` array (memory-mapped unless ``mmap`` is false), never unpickled; refuses what is
    not a regular non-empty file and any damage as ``error`` naming the file."""
    import numpy as np

    if regular_file_size(path, error) == 0:
        raise error(f"{path}: empty file, not a .npy")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except NPY_ERRORS as e:
        raise error(f"{path}: cannot read .npy ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None


def read_bytes(path: Path, what: str, error: type[ZspaceError] = DataError, copies: int = 4) -> bytes:
    """The whole of a regular file, refused (as ``error``) when it is a device, FIFO or folder, or
    when ``copies`` of it (the bytes and what is parsed from them) would not fit in free memory."""
    size = regular_file_size(path, error)
    free = available_memory()
    if free is not None and size * copies > free:
        raise error(f"{path}: this {size / 2**30:.1f} GiB {what} would not fit in the "
                    f"{free / 2**30:.1f} GiB of memory free")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e})") from None


def available_memory() -> int | None:
    """Bytes of memory free for new allocations (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Calls ``write(f)`` on a temporary file beside ``path``, fsyncs it and renames it to ``path``.
    Refuses to replace a folder, device, FIFO or socket there (a rename would swap /dev/full
    for a regular file)."""
    path = Path(path)
    if os.path.lexists(path) and not os.path.islink(path) and not os.path.isfile(path):
        raise ConfigError(f"{path} exists and is not a regular file; give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp's 0600 would hide reports from other users
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_npy_atomic(path: Path, array) -> Path:
    """``np.save`` through write_atomic (no pickle)."""
    import numpy as np

    return write_atomic(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, error: type[ZspaceError] = CheckpointError) -> Any:
    """A JSON file, refused (as ``error``, naming the file) when it is missing, not a regular
    file, over MAX_JSON_BYTES, not UTF-8 JSON, or nested too deeply for the parser."""
    if not os.path.exists(path):
        raise error(f"{path}: missing")
    size = regular_file_size(path, error)
    if size > MAX_JSON_BYTES:
        raise error(f"{path}: {size} bytes is too large for a zspace JSON file (damaged?)")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise error(f"{path}: nested too deeply to read (damaged?)") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None


def write_folder_atomic(path: Path, fill: Callable[[Path], None]) -> Path:
    """Calls ``fill(tmp)`` on an empty temporary folder beside ``path``, fsyncs its files and
    renames it to ``path``, replacing any folder there. A failure leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path} exists and is not a folder")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    old = None
    try:
        fill(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if path.exists():   # moved aside first: a rename cannot replace a non-empty folder
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path
