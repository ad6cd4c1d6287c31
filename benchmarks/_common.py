"""Shared by the benchmarks: data location, machine facts, and RESULTS.md sections."""
from __future__ import annotations

import fcntl
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import torch

from zspace.core.compute import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SHARED_DATA = ROOT.parent / "shared" / "data"

keep_freed_memory()   # the malloc settings the zspace command runs with (peers' own processes keep glibc's)


def use_shared_data() -> None:
    """Points zspace at ../shared/data (MNIST's keras .npz) unless ZSPACE_DATA is set."""
    if "ZSPACE_DATA" not in os.environ and SHARED_DATA.is_dir():
        os.environ["ZSPACE_DATA"] = str(SHARED_DATA)


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def repeat_seconds(fn, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of fn, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def update_section(name: str, markdown: str) -> None:
    """Replaces (or appends) the section between this benchmark's markers in RESULTS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    with open(RESULTS.with_suffix(".lock"), "w") as lock:  # benchmarks may finish together
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        text = (pattern.sub(lambda _: block, text) if pattern.search(text)
                else text.rstrip() + "\n\n" + block + "\n")
        RESULTS.write_text(text)


def vqvae_test_quality(model, batches, num_codes: int) -> dict:
    """A VQ-VAE's reconstruction MSE per subpixel and codebook use (perplexity exp(H) of the code
    frequencies, codes in use) over ``batches``, read once."""
    from zspace.evaluation import reconstruction_error
    from zspace.models.vqvae import perplexity_of_counts

    batches = list(batches)
    mse = reconstruction_error(model, batches)
    with torch.no_grad():
        codes = torch.cat([model.encode_codes(b.x).flatten() for b in batches])
    counts = torch.bincount(codes, minlength=num_codes).double()
    return dict(mse=mse, perplexity=float(perplexity_of_counts(counts)), used=int((counts > 0).sum()))
