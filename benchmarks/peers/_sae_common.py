"""What both peer drivers share (they run in the peers' own venvs: numpy and torch only).

Reads a zspace shard store (manifest.json + shard-NNNNNN.npy) into memory, yields the
training batches in the order zspace's trainer uses (``order.npy``, written by
benchmarks/sae_peers.py), measures FVU / L0 / dead fraction on held-out rows the same way
for every library, and saves the trained weights for zspace's splice measurement.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def arguments(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--train", required=True, help="shard store of the training rows")
    p.add_argument("--test", required=True, help="shard store of the held-out rows")
    p.add_argument("--order", required=True, help=".npy of training row indices, in batch order")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help=".npz for the weights; the metrics go to stdout as JSON")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: the training forward under CPU bf16 autocast")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    return a


def load_store(path) -> np.ndarray:
    """All rows of a shard store, as stored (float16), shards in manifest order."""
    path = Path(path)
    m = json.loads((path / "manifest.json").read_text())
    if m["dtype"] not in ("float16", "float32"):
        raise SystemExit(f"{path}: dtype {m['dtype']} not read by this driver")
    parts = [np.load(path / f"shard-{i:06d}.npy") for i in range(len(m["shards"]))]
    return np.concatenate(parts).reshape(-1, int(np.prod(m["example_shape"])))


class Batches:
    """``steps`` batches of ``batch_size`` rows of X in ``order`` (float32 tensors); records the
    time each batch is asked for, so throughput excludes the first (warm-up) step."""

    def __init__(self, X: np.ndarray, order: np.ndarray, batch_size: int, steps: int):
        if steps * batch_size > len(order):
            raise SystemExit(f"{steps} steps of {batch_size} need {steps * batch_size} rows; order has {len(order)}")
        self.X, self.order, self.B, self.steps = X, order, batch_size, steps
        self.times: list[float] = []

    def __iter__(self):
        for b in range(self.steps):
            self.times.append(time.perf_counter())
            yield torch.from_numpy(self.X[self.order[b * self.B:(b + 1) * self.B]].astype(np.float32))
        self.times.append(time.perf_counter())

    def tokens_per_s(self) -> float:
        """Rows per second over steps 2..S (from the request of batch 2 to the end of the loop)."""
        t = self.times
        return (self.steps - 1) * self.B / (t[-1] - t[1]) if len(t) > 2 else float("nan")


@torch.no_grad()
def held_out_metrics(reconstruct, encode, X_test: np.ndarray, batch_size: int = 4096) -> dict:
    """FVU (squared error over the variance about the held-out mean), mean L0 and the fraction of
    features that never fire, over every held-out row. ``reconstruct(x)`` and ``encode(x)`` take
    float32 (B, d) tensors and return x_hat (B, d) and feature activations (B, width)."""
    x_all = torch.from_numpy(X_test.astype(np.float32))
    sse, l0, fires = 0.0, 0.0, None
    for s in range(0, len(x_all), batch_size):
        x = x_all[s:s + batch_size]
        sse += float((reconstruct(x) - x).double().pow(2).sum())
        f = encode(x) > 0
        l0 += float(f.sum())
        fires = f.sum(0) if fires is None else fires + f.sum(0)
    var = float((x_all.double() - x_all.double().mean(0)).pow(2).sum())
    return {"fvu": sse / var, "l0": l0 / len(x_all), "dead_fraction": float((fires == 0).double().mean()),
            "eval_tokens": len(x_all)}


def finish(out, weights: dict, check_x: torch.Tensor, check_xhat: torch.Tensor, metrics: dict) -> None:
    """Saves the weights (+ 64 held-out rows and the peer's own reconstruction of them, so zspace
    can check it reproduces the peer) and prints the metrics as one JSON line."""
    arrays = {k: (v.detach().float().numpy() if torch.is_tensor(v) else np.asarray(v)) for k, v in weights.items()}
    np.savez(out, check_x=check_x.numpy(), check_xhat=check_xhat.detach().float().numpy(), **arrays)
    print("RESULT " + json.dumps(metrics))
