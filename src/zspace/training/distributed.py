"""The process group, as little of it as training needs.

``Dist`` is what the trainer sees: rank, world size, sums across ranks, a barrier and a
stop flag. With one process every method is a no-op and torch.distributed is never
touched, so single-process training needs no set-up at all. ``init_from_env`` joins the
group torchrun describes in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``): gloo on CPU, NCCL when the device is CUDA.
"""
from __future__ import annotations

import contextlib
import datetime
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import NoReturn

import torch

from ..errors import ConfigError, ZspaceError

# A rank that waits longer than this in a collective (a peer died without torchrun noticing,
# e.g. on another node) raises instead of hanging; torchrun's agent normally stops the
# survivors long before.
DEFAULT_TIMEOUT_S = 300.0


class PeerLost(ZspaceError):
    """A collective failed because another rank stopped (killed, crashed or timed out)."""


@contextlib.contextmanager
def collective(rank: int):
    """Turns the backend's error when a peer is gone into one line that says so."""
    try:
        yield
    except RuntimeError as e:
        text = re.sub(r"^\[[^\]]*\]\s*", "", str(e).strip())   # the backend's source position
        first = text.splitlines()[0][:160] if text else type(e).__name__
        raise PeerLost(f"rank {rank} lost contact with the other ranks (one stopped, was killed or "
                       f"timed out): {first}; the last complete checkpoint is kept") from None


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives run

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of ``t`` (a new tensor on ``t``'s device; ``t`` itself with one rank)."""
        if not self.enabled:
            return t
        import torch.distributed as td

        buf = t.detach().to(self.device, copy=True)
        with collective(self.rank):
            td.all_reduce(buf, op=td.ReduceOp.SUM)
        return buf.to(t.device)

    def sum_dict(self, tensors: dict[str, torch.Tensor],
                 spec: list[tuple[str, tuple[int, ...]]] | None = None) -> dict[str, torch.Tensor]:
        """Each named tensor (any shape) summed across ranks in one collective, as float64.

        ``spec`` lists (name, shape) as every rank must pass alike (default: this rank's
        tensors, sorted); a rank without a value contributes zeros.
        """
        if spec is None:
            spec = [(k, tuple(tensors[k].shape)) for k in sorted(tensors)]
        if not self.enabled:
            return {k: tensors[k] if k in tensors else torch.zeros(shape, dtype=torch.float64)
                    for k, shape in spec}
        flat = [tensors[k].detach().to(self.device, torch.float64).reshape(-1) if k in tensors
                else torch.zeros(math.prod(shape), dtype=torch.float64, device=self.device)
                for k, shape in spec]
        if not flat:
            return {}
        packed = self.all_reduce_sum(torch.cat(flat))
        out, at = {}, 0
        for k, shape in spec:
            n = math.prod(shape)
            out[k] = packed[at:at + n].reshape(shape)
            at += n
        return out

    def any(self, flag: bool | torch.Tensor) -> bool:
        """True when ``flag`` is true on any rank (the stop flag every rank must obey)."""
        if not self.enabled:
            return bool(flag)
        return bool(self.ranks_with(flag))

    def ranks_with(self, flag: bool | torch.Tensor) -> list[int]:
        """The ranks on which ``flag`` is true (one collective)."""
        if not self.enabled:
            return [0] if bool(flag) else []
        v = torch.zeros(self.world_size, dtype=torch.float32, device=self.device)
        v[self.rank] = torch.as_tensor(flag, device=self.device).float().reshape(())
        v = self.all_reduce_sum(v)
        return [r for r in range(self.world_size) if v[r] > 0]

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (e.g. rank 0 decides to stop)."""
        if not self.enabled:
            return bool(flag)
        import torch.distributed as td

        v = torch.tensor([1.0 if flag else 0.0], device=self.device)
        with collective(self.rank):
            td.broadcast(v, src=0)
        return bool(v.item() > 0)

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``t`` (same shape and dtype on all ranks), on the CPU, by rank."""
        if not self.enabled:
            return [t.detach().cpu()]
        import torch.distributed as td

        src = t.detach().to(self.device).contiguous()
        out = [torch.empty_like(src) for _ in range(self.world_size)]
        with collective(self.rank):
            td.all_gather(out, src)
        return [o.cpu() for o in out]

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as td

            with collective(self.rank):
                td.barrier()


SINGLE = Dist()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def init_from_env(device: torch.device | str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> Dist:
    """The process group torchrun's environment describes, joined once per process.

    Without ``WORLD_SIZE`` > 1 (a plain ``python -m zspace``) this returns the single-process
    ``Dist`` and never imports the process-group machinery. Under torchrun each rank uses
    gloo on the CPU or NCCL on ``cuda:LOCAL_RANK`` (a CUDA device given with an index is kept).
    """
    device = torch.device(device)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return SINGLE
    import torch.distributed as td

    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if device.index is None:
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(f"local rank {local_rank} needs a GPU, but only "
                                  f"{torch.cuda.device_count()} are present; use at most that many "
                                  f"processes per node")
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not td.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        td.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    if td.get_world_size() != world or td.get_rank() != rank:
        raise ConfigError(f"process group (rank {td.get_rank()} of {td.get_world_size()}) does not "
                          f"match the environment (RANK={rank}, WORLD_SIZE={world})")
    return Dist(rank, world, local_rank, device)


def shutdown() -> bool:
    """Leaves the process group if this process joined one; True if it had."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        return True
    return False


def exit_process(code: int) -> NoReturn:
    """Ends the process with ``code``; a process-group member leaves the group first and then
    skips the interpreter's finalisation (``os._exit`` after flushing stdout and stderr).

    Why: gloo's worker threads can still be releasing the last collective's tensors when the
    main thread finishes, and releasing a tensor Python owns takes the GIL. A thread that asks
    for the GIL while the interpreter finalises is ended by ``pthread_exit``, which the C++
    runtime turns into ``std::terminate`` (SIGABRT, "terminate called without an active
    exception"; pytorch/pytorch#190489): seen about once in 20 two-rank runs here, after the
    run's work was complete, and torchrun then reports the rank as crashed. Everything zspace
    writes is closed by then (atomic writes), so skipping finalisation loses nothing.
    """
    if shutdown():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):   # a closed or broken pipe: nothing more can be said
                pass
        os._exit(code)
    sys.exit(code)
