"""Data larger than memory, and the memory of the old and the new data path.

``--part larger-than-memory``: writes a float16 ``.npy`` of CIFAR-10 training pixels (real
images, each copy with its own brightness jitter) of ``--gigabytes`` on disk, drops the page
cache, and trains an MLP VAE for one epoch on it memory-mapped; then the same model on an
in-memory float32 array of the same row shape. Reports peak resident memory (ru_maxrss of
each training process, VmHWM) and rows/s, and deletes the file.

``--part memory``: peak resident memory of loading MNIST-sized data and iterating one epoch
of batches with the data layer of this checkout and with an older revision's (a git
worktree of ``--old-rev``, imported in its own process), in the same run; also for a
488 MiB float32 ``.npy`` opened memory-mapped (the issue's example).

    python benchmarks/data_scale.py --part memory --threads 2
    python benchmarks/data_scale.py --part larger-than-memory --gigabytes 30 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import ROOT, SHARED_DATA, command_line, machine, update_section  # noqa: E402

EPOCH = r"""
import json, sys, time
import numpy as np, torch, zspace
def peak_mb():   # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
path, rows, threads, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
if rows:          # the in-memory comparison: the first rows of the same file, as float32 in RAM
    x = np.asarray(np.load(path, mmap_mode="r")[:rows], dtype=np.float32)
    data = zspace.data.sources.split_holdout(zspace.ArrayData.from_arrays(x, name="in-memory"), 0.01, 0)
else:
    data = path
cfg = zspace.TrainConfig(epochs=1, batch_size=256, lr=1e-3, eval_limit=1000, threads=threads, seed=0,
                         workers=workers)
run = zspace.train("vae", data, preprocessing="scale", config=cfg, progress=False, figures=False,
                   test_fraction=0.01, hidden=(256,), latent_dim=32, likelihood="gaussian-fixed")
h = run.history()[-1]
n = len(run.data().train) if not rows else len(data.train)
print(json.dumps({"rows": n, "seconds": h["wall_seconds"], "rows_per_s": n / h["wall_seconds"],
                  "maxrss_mb": peak_mb(),
                  "test_loss": h.get("test_loss")}))
"""

MEMORY = r"""
import json, sys
import numpy as np
def peak_mb():   # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
src, kind = sys.argv[1], sys.argv[2]
sys.path.insert(0, src)
import zspace
from zspace.data import BatchLoader, Preprocessing
base = peak_mb()
splits = zspace.load_dataset(kind)
loader = BatchLoader(splits.train, 256, Preprocessing("scale"), seed=0)
n = 0
for b in loader.epoch(0):
    n += len(b)
print(json.dumps({"examples": n, "peak_mb": peak_mb(), "after_import_mb": base}))
"""


def child(script: str, *args, env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def drop_page_cache() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def write_big_npy(path: Path, gigabytes: float) -> int:
    import zspace

    cifar = zspace.data.ImageFolder(SHARED_DATA / "images" / "cifar10-jpg.zip", "cifar10/train")
    pixels = np.concatenate([cifar.read(np.arange(i, min(i + 5000, len(cifar))))
                             for i in range(0, len(cifar), 5000)]).astype(np.float32) / 255.0
    row_bytes = pixels[0].size * 2
    rows = int(gigabytes * 1e9 // row_bytes)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f2", "fortran_order": False,
                                                "shape": (rows, *pixels.shape[1:])})
        done = 0
        while done < rows:
            k = min(len(pixels), rows - done)
            gain = rng.uniform(0.8, 1.2, size=(k, 1, 1, 1)).astype(np.float32)
            f.write(np.clip(pixels[:k] * gain, 0, 1).astype(np.float16).tobytes())
            done += k
    return rows


def larger_than_memory(a) -> None:
    folder = Path(a.scratch or tempfile.mkdtemp(prefix="zspace-big-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cifar-float16.npy"
    try:
        t0 = time.perf_counter()
        rows = write_big_npy(path, a.gigabytes)
        write_s = time.perf_counter() - t0
        size_gb = path.stat().st_size / 1e9
        print(f"wrote {size_gb:.1f} GB ({rows} rows) in {write_s:.0f} s", flush=True)
        dropped = drop_page_cache()
        disk = child(EPOCH, path, 0, a.threads, a.workers)
        print("memory-mapped:", disk, flush=True)
        memory = child(EPOCH, path, a.memory_rows, a.threads, a.workers)
        print("in memory:", memory, flush=True)
    finally:
        path.unlink(missing_ok=True)
    ratio = disk["rows_per_s"] / memory["rows_per_s"]
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    publish(a)("data-larger-than-memory", f"""
### One epoch over data larger than memory

Command: `{command_line()}`
Machine: {machine()}, {ram:.0f} GiB of RAM; {a.threads} torch thread(s), {a.workers} loader worker(s);
1-minute load average {os.getloadavg()[0]:.1f} at the end (2 cores).
Data: a float16 `.npy` of **{size_gb:.1f} GB** ({rows:,} rows of 3x32x32), CIFAR-10 training pixels
(decoded from ../shared/data/images/cifar10-jpg.zip) repeated with a brightness jitter per copy;
written in {write_s:.0f} s, page cache {'dropped' if dropped else 'NOT dropped (no permission)'} before
training, deleted afterwards. Model: MLP VAE 3072-256-32, Gaussian decoder (fixed variance), batch 256,
Adam, `preprocessing="scale"`, 1 epoch, 1% held out (`zspace.train(..., data=PATH)`, the file
memory-mapped, read and checked batch by batch in block-shuffled order).

| | rows | wall s | rows/s | peak resident memory |
|---|---|---|---|---|
| memory-mapped float16 `.npy` ({size_gb:.1f} GB) | {disk['rows']:,} | {disk['seconds']:.0f} | {disk['rows_per_s']:,.0f} | **{disk['maxrss_mb']:.0f} MB** (target < 2 GB) |
| in-memory float32 array, same row shape | {memory['rows']:,} | {memory['seconds']:.0f} | {memory['rows_per_s']:,.0f} | {memory['maxrss_mb']:.0f} MB |

Throughput ratio memory-mapped / in memory: **{ratio:.2f}** (target ≥ 0.8).
""")


def memory(a) -> None:
    old = Path(tempfile.mkdtemp(prefix="zspace-old-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), a.old_rev],
                   check=True, capture_output=True)
    try:
        env = {"ZSPACE_DATA": str(SHARED_DATA)}
        rows = []
        big = Path(tempfile.mkdtemp(prefix="zspace-npy-")) / "features.npy"
        np.lib.format.open_memmap(big, mode="w+", dtype=np.float32, shape=(1_000_000, 128))[:] = \
            np.random.default_rng(0).random((1_000_000, 128), dtype=np.float32)
        for label, kind in (("MNIST (keras .npz, 60,000 x 28 x 28 uint8)", "mnist"),
                            (f"float32 .npy, {big.stat().st_size / 2**20:.0f} MiB, memory-mapped", str(big))):
            new = child(MEMORY, ROOT / "src", kind, env=env)
            was = child(MEMORY, old / "src", kind, env=env)
            rows.append((label, was, new))
            print(label, "old", was, "new", new, flush=True)
        big.unlink()
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    table = "\n".join(f"| {label} | {was['peak_mb'] - was['after_import_mb']:.0f} MB | "
                      f"{new['peak_mb'] - new['after_import_mb']:.0f} MB | {was['peak_mb']:.0f} / {new['peak_mb']:.0f} MB |"
                      for label, was, new in rows)
    publish(a)("data-memory", f"""
### Memory of the old and the new data path

Command: `{command_line()}`
Machine: {machine()}. Each cell is a fresh process: import zspace, `load_dataset`, then one
epoch of `BatchLoader(train, 256, scale)`; peak resident memory (VmHWM) above the process
after import. Old = the data layer of revision `{a.old_rev}` (a git worktree), new = this checkout.

| data | old: peak above import | new: peak above import | old / new peak in all |
|---|---|---|---|
{table}
""")


def publish(a):
    """RESULTS.md's section writer, or print alone with --no-write (smoke runs)."""
    return (lambda name, text: print(text)) if a.no_write else update_section


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("memory", "larger-than-memory"), required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gigabytes", type=float, default=30.0)
    p.add_argument("--memory-rows", type=int, default=200_000, help="rows of the in-memory comparison")
    p.add_argument("--workers", type=int, default=0, help="loader worker processes in both runs")
    p.add_argument("--scratch", help="folder for the big file (default: a new temporary folder)")
    p.add_argument("--old-rev", default="5038222", help="revision whose data layer is 'old'")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    a = p.parse_args()
    (memory if a.part == "memory" else larger_than_memory)(a)


if __name__ == "__main__":
    main()
