"""``zspace train ... --nproc N``: the same command, relaunched through torchrun's own module
(``torch.distributed.run``) as N local processes on one machine.

The parent only launches and waits; each worker is ``python -m zspace train ...`` without
``--nproc``, which joins the process group from torchrun's environment
(``distributed.init_from_env``). A worker's error is printed once by that worker (rank 0
for errors every rank meets alike), so the parent adds nothing but the exit status.
"""
from __future__ import annotations

import logging
import os
import signal
import sys

from ..core.io import available_memory
from ..errors import ConfigError

_FLAG = "--nproc"
RANK_MEMORY = 512 << 20   # bytes a CPU rank takes before its data: the Python process with torch loaded


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` with ``--nproc N`` / ``--nproc=N`` removed."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == _FLAG:
            skip = True
            continue
        if arg.startswith(_FLAG + "="):
            continue
        out.append(arg)
    return out


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def launch_local(nproc: int, argv: list[str], device: str = "cpu", threads: int | None = None) -> int | None:
    """Runs ``zspace`` with ``argv`` (minus ``--nproc``) as ``nproc`` local ranks and returns
    the exit status; None when ``nproc`` is 1 (the caller trains in its own process)."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"--nproc must be an integer >= 1, got {nproc!r}")
    if under_torchrun():
        raise ConfigError("--nproc starts its own processes; under torchrun leave it out")
    if nproc == 1:
        return None
    free = available_memory()
    if free is not None and nproc * RANK_MEMORY > free:   # each rank imports torch and holds a copy of the model
        raise ConfigError(f"--nproc {nproc} needs about {nproc * RANK_MEMORY / 2**30:.0f} GiB for its processes "
                          f"alone, more than the {free / 2**30:.1f} GiB of memory free; use fewer")
    import torch

    if torch.device(device).type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(f"--nproc {nproc} with --device {device} needs {nproc} GPUs, "
                          f"but {torch.cuda.device_count()} are present")
    # torch's intra-op threads per rank: --threads, else the cores shared out (torchrun's default is 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads or max(1, (os.cpu_count() or 1) // nproc)))
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = torchrun.parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module",
                                "zspace", *without_nproc(argv)])
    for name in list(logging.root.manager.loggerDict):   # its failure report repeats the worker's line
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        torchrun.run(args)
    except ChildFailedError as e:
        codes = {rank: f.exitcode for rank, f in e.failures.items()}
        # ranks that exited with 2 printed their line; SIGTERM is the agent stopping survivors
        culprits = {r: c for r, c in codes.items() if c not in (2, -signal.SIGTERM)}
        if not culprits:
            return 2 if 2 in codes.values() else 1
        rank = min(culprits)
        code = culprits[rank]
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        sys.stderr.write(f"zspace: error: rank {rank} {how}; every rank was stopped "
                         f"(the last complete checkpoint is kept)\n")
        return 1
    return 0


def is_main_process() -> bool:
    """False on torchrun's ranks other than 0 (which report nothing themselves)."""
    return os.environ.get("RANK", "0") in ("", "0")
