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

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

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


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = val
    for name, val in meta.get("scalars", {}).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    groups = meta["param_groups"]
    for g in groups:  # JSON turned tuples (Adam's betas) into lists
        for k, v in g.items():
            if isinstance(v, list) and k != "params":
                g[k] = tuple(v)
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"optimiser state does not fit this model: {e}") from None


# ---- checkpoints -----------------------------------------------------------------------
def save_checkpoint(run_dir: Path, name: str, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, state: dict, keep: int = 1,
                    rng: dict[str, torch.Tensor] | None = None) -> Path:
    """Writes RUN/checkpoints/NAME atomically; ``rng`` (default: this process's RNG state)
    holds every rank's RNG state under data-parallel training."""
    ckdir = Path(run_dir) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=ckdir, prefix=f".{name}."))
    try:
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
    write_text_atomic(ckdir / "latest", name + "\n")
    old = sorted(p for p in ckdir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir}: no checkpoint yet (checkpoints/latest missing)")
    name = pointer.read_text().strip()
    path = run_dir / "checkpoints" / name
    if not name or "/" in name or not path.is_dir():
        raise CheckpointError(f"{run_dir}: checkpoints/latest names {name!r}, which does not exist")
    return path


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as e:
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
        if v.shape != own[k].shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, model needs {tuple(own[k].shape)}")
    model.load_state_dict(tensors)
