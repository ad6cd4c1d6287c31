"""Checkpoints: weights and optimiser tensors in safetensors, everything else in JSON.

Nothing is pickled, so loading never executes code. A checkpoint is a folder written
under a temporary name, flushed, renamed into place, and only then named in the
``latest`` file (itself replaced atomically); a crash at any moment leaves the
previous checkpoint intact and ``latest`` pointing at a complete one.

    RUN/config.json                   the full run config (model, data, training)
    RUN/checkpoints/latest            name of the newest complete checkpoint
    RUN/checkpoints/epoch-0003/       model.safetensors, trainer.safetensors, state.json
"""
from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.io import _umask, regular_file_size
from ..core.io import fsync_dir as _fsync_dir
from ..core.io import read_json, write_json_atomic, write_text_atomic  # noqa: F401  (re-exported)
from ..errors import CheckpointError
from ..rng import rng_state

CONFIG_FILE = "config.json"
FORMAT_VERSION = 1


# ---- optimiser state without pickle ----------------------------------------------------
def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _check_optimizer_meta(meta) -> None:
    groups = meta.get("param_groups") if isinstance(meta, dict) else None
    if not isinstance(groups, list) or not groups or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list)
            and all(isinstance(i, int) and not isinstance(i, bool) for i in g["params"]) for g in groups):
        raise CheckpointError("optimiser state is malformed (param_groups must be a list of groups "
                              "with integer params)")
    if not isinstance(meta.get("scalars", {}), dict):
        raise CheckpointError("optimiser state is malformed (scalars must be an object)")


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Restores ``opt`` from flat tensors and JSON, each tensor checked against the parameter it
    belongs to first: a mis-shaped moment would otherwise fail only in the first step."""
    _check_optimizer_meta(meta)
    params = [p for g in opt.param_groups for p in g["params"]]   # state_dict's numbering

    def parameter(name: str, prefix: str) -> tuple[int, str]:
        pid, _, key = name[len(prefix):].partition(".")
        if not pid.isdigit() or not key:
            raise CheckpointError(f"optimiser state entry {name!r} is not {prefix}PARAMETER.KEY")
        if int(pid) >= len(params):
            raise CheckpointError(f"optimiser state names parameter {pid}; the model has {len(params)}")
        return int(pid), key

    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            pid, key = parameter(name, "optim.")
            p = params[pid]
            if val.dim() > 0 and (val.shape != p.shape or val.dtype != p.dtype):
                raise CheckpointError(f"optimiser tensor {name} is {val.dtype} {tuple(val.shape)}; its parameter "
                                      f"is {p.dtype} {tuple(p.shape)}")
            if val.is_floating_point() and not bool(torch.isfinite(val).all()):
                raise CheckpointError(f"optimiser tensor {name} holds NaN or infinite values; the checkpoint "
                                      f"is damaged")
            if val.dim() > 0:   # stored contiguous; back in the parameter's layout (channels-last weights),
                val = torch.empty_like(p).copy_(val)   # which the fused Adam kernel assumes its moments share
            state.setdefault(pid, {})[key] = val
    for name, val in meta.get("scalars", {}).items():
        pid, key = parameter(name, "")
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise CheckpointError(f"optimiser scalar {name} must be a finite number, got {val!r}")
        state.setdefault(pid, {})[key] = val
    groups = meta["param_groups"]
    fresh = opt.param_groups[0]
    for g in groups:  # JSON turned tuples (Adam's betas) into lists
        for k, v in g.items():
            if isinstance(v, list) and k != "params":
                g[k] = tuple(v)
        for k, want in fresh.items():   # each hyperparameter of the type this optimiser uses
            if k != "params" and want is not None and k in g and not _same_kind(g[k], want):
                raise CheckpointError(f"optimiser setting {k} is {g[k]!r}; this optimiser needs "
                                      f"{type(want).__name__} like {want!r}")
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"optimiser state does not fit this model: {e}") from None


def _same_kind(value, like) -> bool:
    """Whether a stored optimiser setting has the type of the optimiser's own (int for float is fine)."""
    if isinstance(like, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(like, bool)
    if isinstance(like, (int, float)):
        return isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(like, tuple):
        return isinstance(value, tuple) and len(value) == len(like) and all(map(_same_kind, value, like))
    return isinstance(value, type(like))


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_state(state, path: Path) -> dict:
    """state.json checked before use: the counters are counts, the history is a non-empty list
    of rows whose last one is where the counters say the run stands, the optimiser an object."""
    def bad(what: str):
        return CheckpointError(f"{path}: incomplete or damaged state ({what})")

    if not isinstance(state, dict):
        raise bad("not an object")
    for key in ("epoch", "step", "batch"):
        if not _is_count(state.get(key)):
            raise bad(f"{key} must be an integer >= 0, got {state.get(key)!r}")
    history = state.get("history")
    if not isinstance(history, list) or not history or not all(isinstance(r, dict) for r in history):
        raise bad("history must be a non-empty list of rows")
    last = history[-1]
    if not _is_count(last.get("epoch")) or not _is_count(last.get("step")):
        raise bad("history rows need integer epoch and step")
    if last["step"] != state["step"] or last["epoch"] not in (state["epoch"], state["epoch"] + 1):
        raise bad(f"step {state['step']}, epoch {state['epoch']} disagree with the history's last row "
                  f"(epoch {last['epoch']}, step {last['step']})")
    if not isinstance(state.get("optimizer", {}), dict):
        raise bad("optimizer must be an object")
    version = state.get("format_version", FORMAT_VERSION)
    if not _is_count(version) or version > FORMAT_VERSION:
        raise bad(f"format_version {version!r}: written by a newer zspace (this one reads {FORMAT_VERSION})")
    return state


def read_state(checkpoint: Path) -> dict:
    """CHECKPOINT/state.json, read and checked (see check_state)."""
    path = Path(checkpoint) / "state.json"
    return check_state(read_json(path), path)


def check_rng_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Every CPU generator state must be a byte tensor of this torch's state size, checked
    before anything is restored (torch.set_rng_state's own errors come mid-resume)."""
    size = torch.get_rng_state().numel()
    for name, t in tensors.items():
        if name.startswith(("rng.", "rank.")):
            if t.dtype != torch.uint8 or t.dim() != 1:
                raise CheckpointError(f"{path}: RNG state {name} is {t.dtype} {tuple(t.shape)}, not a byte vector")
            if (name == "rng.torch" or name.endswith(".torch")) and t.numel() != size:
                raise CheckpointError(f"{path}: RNG state {name} has {t.numel()} bytes, torch needs {size}")


# ---- checkpoints -----------------------------------------------------------------------
def save_checkpoint(run_dir: Path, name: str, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, state: dict, keep: int = 1,
                    rng: dict[str, torch.Tensor] | None = None) -> Path:
    """Writes RUN/checkpoints/NAME atomically; ``rng`` (default: this process's RNG state)
    holds every rank's RNG state under data-parallel training."""
    ckdir = Path(run_dir) / "checkpoints"
    previous = _pointer_name(ckdir / "latest")
    try:
        final = _write_checkpoint(ckdir, name, model, optimizer, state, rng)
        write_text_atomic(ckdir / "latest", name + "\n")
    except (OSError, SafetensorError) as e:   # disk full, permissions, a read-only file system
        kept = (f"the previous checkpoint {previous} is intact" if previous
                else "no earlier checkpoint exists")
        found = re.search(r'message: "([^"]+)"', str(e))   # safetensors wraps the OS error in its own text
        reason = getattr(e, "strerror", None) or (found.group(1) if found else " ".join(str(e).split()))
        raise CheckpointError(f"cannot write checkpoint {name} in {ckdir} ({reason}); {kept}; "
                              f"free space or fix permissions, then resume with --resume") from None
    old = sorted(p for p in ckdir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def _write_checkpoint(ckdir: Path, name: str, model, optimizer, state: dict, rng) -> Path:
    """Fills CHECKPOINTS/.NAME.tmp and renames it to CHECKPOINTS/NAME (see save_checkpoint)."""
    ckdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=ckdir, prefix=f".{name}."))
    try:
        os.chmod(tmp, 0o777 & ~_umask())   # mkdtemp's 0700 would hide the checkpoint from other users
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "zspace"})
        trainer_tensors = dict(rng) if rng is not None else rng_state()
        meta: dict = {}
        if optimizer is not None:
            t, meta = optimizer_to_flat(optimizer)
            trainer_tensors.update(t)
        save_file(trainer_tensors, str(tmp / "trainer.safetensors"))
        write_json_atomic(tmp / "state.json", {"format_version": FORMAT_VERSION, **state,
                                               "optimizer": meta})
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = ckdir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ckdir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _pointer_name(pointer: Path) -> str | None:
    """The checkpoint ``latest`` names, None where it is missing or unreadable."""
    try:
        return pointer.read_text(encoding="utf-8").strip() or None if pointer.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def latest_checkpoint(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir}: no checkpoint yet (checkpoints/latest missing)")
    try:
        if pointer.stat().st_size > 4096:
            raise CheckpointError(f"{pointer}: too large to name a checkpoint (damaged?)")
        name = pointer.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CheckpointError(f"{pointer}: damaged (not UTF-8 text naming a checkpoint)") from None
    path = run_dir / "checkpoints" / name
    if not name or "/" in name or name.startswith(".") or not path.is_dir():
        raise CheckpointError(f"{run_dir}: checkpoints/latest names {name!r}, which does not exist")
    return path


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: missing")
    regular_file_size(path, CheckpointError)   # a FIFO would block the open, a device read without end
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError, MemoryError, OverflowError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def load_weights(model: torch.nn.Module, path: Path) -> None:
    tensors = load_tensors(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the model "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in tensors.items():
        if v.shape != own[k].shape or v.dtype != own[k].dtype:
            raise CheckpointError(f"{path}: {k} is {v.dtype} of shape {tuple(v.shape)}, the model needs "
                                  f"{own[k].dtype} of shape {tuple(own[k].shape)}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{path}: {k} holds NaN or infinite values; the weights are damaged")
    model.load_state_dict(tensors)


def clean_stale_temporaries(run_dir: Path) -> list[str]:
    """Removes what a killed process left in RUN/checkpoints: unfinished checkpoint folders
    (.NAME.*) and temporary files of atomic writes (.latest.*.tmp). Call only while no other
    process writes the run (rank 0, before training starts)."""
    ckdir = Path(run_dir) / "checkpoints"
    removed = []
    if not ckdir.is_dir():
        return removed
    for p in ckdir.iterdir():
        if not p.name.startswith("."):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)
        else:
            continue
        removed.append(p.name)
    return removed
