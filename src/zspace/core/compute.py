"""Where compute happens: the device (checked against this machine) and torch's thread count.

torch's own default takes every core it sees; on a shared or busy machine that
oversubscribes badly (a small fit ran 100x slower than on one thread), so zspace's default
is ``min(usable cores, MAX_DEFAULT_THREADS)``, and small fits (detectors, scikit-learn
façades) use one thread. A run gives the same numbers bit for bit only with the same thread
count: a reduction split over other threads sums in another order.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from ..errors import ConfigError

MAX_DEFAULT_THREADS = 4
SMALL_FIT_VALUES = 2_000_000   # rows x features below which one thread is fastest


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    return min(usable_cores(), MAX_DEFAULT_THREADS)


def resolve_threads(threads: int | None) -> int:
    """``threads`` checked, or the default when None."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    return threads


def small_fit_threads(num_values: int, threads: int | None = None) -> int:
    """One thread for a fit on fewer than SMALL_FIT_VALUES numbers, unless ``threads`` is given."""
    if threads is not None:
        return resolve_threads(threads)
    return 1 if num_values < SMALL_FIT_VALUES else default_threads()


@contextlib.contextmanager
def using_threads(threads: int | None) -> Iterator[int]:
    """torch's intra-op thread count set for the block (the default when None), then restored."""
    n = resolve_threads(threads)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def set_threads(threads: int | None) -> int:
    """Sets torch's intra-op thread count for the rest of the process (the default when None)."""
    n = resolve_threads(threads)
    torch.set_num_threads(n)
    return n


def resolve_device(name: str | torch.device) -> torch.device:
    """The device, checked: a name torch knows and hardware this machine has."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device type {dev.type!r} is not supported; use cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(name)!r} asked for, but this torch build sees no CUDA GPU; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {str(name)!r}: only {torch.cuda.device_count()} GPU(s) present")
    return dev


# glibc's malloc hands allocations above a moving threshold (128 KB to start) to mmap and
# returns freed memory at the top of the heap to the system once more than twice that is free.
# Eager PyTorch allocates and frees megabyte temporaries every op, so on this CPU each of them
# could be page-faulted afresh (the kernel zeroing every page): the same importance-sampled NLL
# took 3.7 or 6.7 minutes from one process to the next depending on the heap's history, and an
# elementwise op on fresh 1 MB temporaries ran 7x slower. Fixed thresholds end that.
MMAP_THRESHOLD = 32 << 20      # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 512 << 20     # freed memory kept for reuse before it is returned
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt parameters, <malloc.h>
_kept = None


def keep_freed_memory() -> bool:
    """Asks glibc's malloc to keep freed memory for reuse (fixed mmap and trim thresholds), so
    torch's temporaries are not page-faulted afresh each time. Once per process; True if set.

    Left alone where the C library is not glibc, or where the user set ``MALLOC_*`` variables
    (their choice stands). The ``zspace`` command calls it at start; a library user may.
    The cost: up to TRIM_THRESHOLD of freed memory stays with the process instead of the system.
    """
    global _kept
    if _kept is not None:
        return _kept
    _kept = False
    if any(k.startswith(("MALLOC_", "GLIBC_TUNABLES")) for k in os.environ):
        return _kept
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return _kept
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _kept
