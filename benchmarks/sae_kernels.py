"""The TopK SAE's row-sparse kernels: compiled C against the torch code they replace (issue 16).

For each SAE shape of benchmarks/sae_peers.py (4096 rows a batch), times the k largest of each
row of the pre-activations (fp32 and bf16; in the 4 MB row chunks the training step uses),
``gather_dot`` (the sparse decode's gradient for the values) and ``scatter_outer`` (the
dictionary gradients) through zspace.nn.sparse_rows with the compiled kernels on and off
(ZSPACE_NATIVE=0 selects the torch paths: blocked ``torch.topk``, dense products or ``bmm`` /
``index_add_`` by the same width-to-k rule as the step), and checks both give the same numbers.
Median of --repeats timings, one torch thread.

    python benchmarks/sae_kernels.py --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, repeat_seconds, update_section  # noqa: E402

from zspace.nn import sparse_rows as sr  # noqa: E402

SHAPES = [   # (model, d, width, k)
    ("stories260k", 64, 512, 8), ("stories260k", 64, 512, 32), ("stories260k", 64, 2048, 8),
    ("stories260k", 64, 2048, 32), ("minilm", 384, 3072, 8), ("minilm", 384, 3072, 32),
    ("minilm aux-k", 384, 1260, 256),
]
ROWS = 4096


def timed(fn, repeats: int) -> float:
    """Median milliseconds of a call."""
    return statistics.median(repeat_seconds(fn, repeats)) * 1e3


def in_chunks(x: torch.Tensor, k: int):
    return [sr.row_topk(x[r], k) for r in sr.row_chunks(len(x), x.shape[1])]


def measure(d: int, width: int, k: int, repeats: int, compiled: bool) -> dict:
    os.environ["ZSPACE_NATIVE"] = "1" if compiled else "0"
    g = torch.Generator().manual_seed(width + k)
    pre = torch.randn(ROWS, width, generator=g)
    pre_bf16 = pre.bfloat16()
    G, X = torch.randn(ROWS, d, generator=g), torch.randn(ROWS, d, generator=g)
    W = torch.randn(width, d, generator=g)
    idx = torch.stack([torch.randperm(width, generator=g)[:k] for _ in range(ROWS)])
    v = torch.randn(ROWS, k, generator=g)
    out = {"topk_fp32": timed(lambda: in_chunks(pre, k), repeats),
           "topk_bf16": timed(lambda: in_chunks(pre_bf16, k), repeats),
           "gather_dot": timed(lambda: sr.gather_dot(G, W, idx), repeats),
           "scatter_outer": timed(lambda: sr.scatter_outer(idx, v, X, width), repeats)}
    vals = torch.cat([a for a, _ in in_chunks(pre, k)])
    out["check"] = (vals.sort(1).values, sr.gather_dot(G, W, idx), sr.scatter_outer(idx, v, X, width))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not sr.compiled_available():
        raise SystemExit("the compiled kernels are not available here (no C compiler?): nothing to compare")
    rows = []
    for model, d, width, k in SHAPES:
        c = measure(d, width, k, args.repeats, compiled=True)
        t = measure(d, width, k, args.repeats, compiled=False)
        diff = max(float((a - b).abs().max()) for a, b in zip(c.pop("check"), t.pop("check")))
        rows.append((model, d, width, k, t, c, diff))
        print(model, d, width, k, {n: f"{t[n]:.2f} -> {c[n]:.2f} ms" for n in c}, f"max diff {diff:.1e}", flush=True)
    os.environ.pop("ZSPACE_NATIVE", None)
    names = ("topk_fp32", "topk_bf16", "gather_dot", "scatter_outer")
    md = [f"Command: `{command_line()}`", f"Machine: {machine()}; {args.threads} torch thread(s), median of "
          f"{args.repeats}", "",
          f"Milliseconds per {ROWS}-row batch, torch path -> compiled (zspace.nn.sparse_rows; ZSPACE_NATIVE=0 "
          "gives the torch path). top-k: the k largest of each row of (4096, width) pre-activations in the 4 MB "
          "row chunks of the training step; gather_dot: out[b, j] = <G[b], W[idx[b, j]]>; scatter_outer: the "
          "(width, d) gradient f^T X through k indices per row. Max diff: largest absolute difference between "
          "the two paths' results (sorted top-k values, products).", "",
          "| shapes | d | width | k | " + " | ".join(names) + " | max diff |", "|---|---|---|---|" + "---|" * 5]
    for model, d, width, k, t, c, diff in rows:
        md.append(f"| {model} | {d} | {width} | {k} | "
                  + " | ".join(f"{t[n]:.2f} → {c[n]:.2f} ({t[n] / c[n]:.1f}×)" for n in names) + f" | {diff:.1e} |")
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        update_section("sae-kernels", "### The TopK SAE's row-sparse kernels: torch against compiled (issue 16)\n\n" + text)


if __name__ == "__main__":
    main()
