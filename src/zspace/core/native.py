"""Small C kernels compiled on first use with the machine's own C compiler, loaded with ctypes.

A few loops that PyTorch runs far from the CPU's speed (per-row selection, gathers through
index lists) are written in plain C (no Python or torch headers, so a build takes well under a
second). ``load(source, signatures)`` compiles ``source`` once per machine into a shared library
in the cache folder, keyed by the source, the compiler and the CPU (it is built for this CPU:
``-march=native``), and returns it, or None where no compiler works; callers then run their
torch code instead, and a warning says so once.

The cache is ``$ZSPACE_CACHE/native``, else ``$XDG_CACHE_HOME/zspace/native``, else
``~/.cache/zspace/native``; a build is written to a temporary name and renamed into place, so
two processes building at once never load a half-written library. ``ZSPACE_NATIVE=0`` turns the
compiled kernels off (every caller then takes its torch path).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c11", "-shared", "-fPIC")
_loaded: dict[str, ctypes.CDLL | None] = {}
_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get("ZSPACE_NATIVE", "1") != "0"


def cache_dir() -> Path:
    if os.environ.get("ZSPACE_CACHE"):
        return Path(os.environ["ZSPACE_CACHE"]) / "native"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zspace" / "native"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc) or shutil.which("gcc") or shutil.which("clang")


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))}))
    except OSError:
        return platform.processor() or platform.machine()


def _build(source: Path, cc: str) -> Path:
    text = source.read_bytes()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(text + version.encode() + _cpu_id().encode() + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        p = subprocess.run([cc, *FLAGS, str(source), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=120)
        if p.returncode:
            raise OSError(f"{cc} failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load(source: Path, signatures: dict[str, list]) -> ctypes.CDLL | None:
    """The compiled ``source`` with ``signatures`` (name -> ctypes argument types; every function
    returns void), built on first use; None (with one warning) where it cannot be built or loaded."""
    key = str(source)
    if key in _loaded:
        return _loaded[key]
    with _lock:
        if key in _loaded:
            return _loaded[key]
        lib = None
        cc = _compiler()
        try:
            if cc is None:
                raise OSError("no C compiler found (set CC, or install gcc)")
            lib = ctypes.CDLL(str(_build(source, cc)))
            for name, args in signatures.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = args, None
        except (OSError, subprocess.SubprocessError, AttributeError) as e:
            warnings.warn(f"zspace: the compiled kernels of {source.name} are not available ({e}); "
                          "running the slower torch code instead", RuntimeWarning, stacklevel=3)
            lib = None
        _loaded[key] = lib
        return lib
