"""Seeded, isolated randomness on CPU and, when in use, CUDA.

Evaluation, figures and sampling run inside ``seeded(seed)`` so their numbers are
fixed by the seed and training's random stream is left exactly as it was.
"""
from __future__ import annotations

import contextlib

import torch


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []


@contextlib.contextmanager
def seeded(seed: int):
    """Runs the block with all RNGs seeded by ``seed``; restores every RNG afterwards."""
    with torch.random.fork_rng(devices=_cuda_devices()):
        torch.manual_seed(seed)
        yield


def rng_state() -> dict[str, torch.Tensor]:
    """The global RNG states as tensors (for safetensors checkpoints)."""
    state = {"rng.torch": torch.get_rng_state()}
    for i in _cuda_devices():
        state[f"rng.cuda.{i}"] = torch.cuda.get_rng_state(i)
    return state


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    for name, value in tensors.items():
        if name.startswith("rng.cuda."):
            index = int(name.rsplit(".", 1)[1])
            if index < torch.cuda.device_count():
                torch.cuda.set_rng_state(value, index)
