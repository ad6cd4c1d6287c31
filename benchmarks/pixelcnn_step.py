"""PixelCNN training step on this CPU: memory layout, precision, masks and threads, then the
likelihood after a fixed number of steps (the default 7 x 64 PixelCNN, Bernoulli head,
statically binarized MNIST, batch 64, Adam).

(a) Seconds per optimiser step (forward, backward, Adam), variants alternated step by step
    and the median kept, so that load from other processes hits every variant alike:
      before       NCHW tensors, fp32 (the layout before channels_last became the default)
      fp32         channels_last (NHWC), fp32: the default now
      bf16         channels_last + bf16 autocast (`--precision bf16`)
      bf16 NCHW    NCHW + bf16 autocast
      fp32 folded  channels_last, masks multiplied into the weights once (timing only: a
                   training run would also need the gradients masked)
    plus the default at 1 thread (thread scaling).
(b) Equal likelihood: `before` and `bf16` trained for --steps steps from the same seed on
    the same batches; exact test NLL of both on --eval-images test images (fp32).

    python benchmarks/pixelcnn_step.py --threads 2
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time

import torch
import torch.nn.functional as F

import zspace
from _common import command_line, machine, update_section, use_shared_data
from zspace.evaluation import evaluate_exact_likelihood
from zspace.models.pixelcnn import MaskedConv2d, PixelCNN, PixelCNNConfig

VARIANTS = {   # name: (channels_last, bf16, masks folded)
    "before": (False, False, False),
    "fp32": (True, False, False),
    "bf16": (True, True, False),
    "bf16 NCHW": (False, True, False),
    "fp32 folded": (True, False, True),
}


def build(channels_last: bool, fold: bool = False, seed: int = 0) -> PixelCNN:
    torch.manual_seed(seed)
    m = PixelCNN(PixelCNNConfig(head="bernoulli"))
    m.channels_last = channels_last
    m.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if fold:
        for conv in m.modules():
            if isinstance(conv, MaskedConv2d):
                conv.weight.data.mul_(conv.mask)
                conv.forward = (lambda c: lambda x: F.conv2d(x, c.weight, c.bias, padding=c.padding))(conv)
    return m


def step_fn(model: PixelCNN, bf16: bool, lr: float):
    opt = torch.optim.Adam(model.parameters(), lr)

    def step(x):
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = -model.log_prob(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def time_steps(batches, steps: int, threads: int, lr: float) -> dict:
    torch.set_num_threads(threads)
    fns = {name: step_fn(build(cl, fold), bf16, lr) for name, (cl, bf16, fold) in VARIANTS.items()}
    times = {name: [] for name in fns}
    for name, fn in fns.items():          # warm-up (oneDNN primitive creation)
        fn(batches[0])
    for i in range(steps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(batches[(i + 1) % len(batches)])
            times[name].append(time.perf_counter() - t0)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timed-steps", type=int, default=8)
    ap.add_argument("--steps", type=int, default=150, help="training steps of (b)")
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=6e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    use_shared_data()
    data = zspace.load_dataset("mnist")
    pre = zspace.Preprocessing("static-binarize")
    loader = zspace.BatchLoader(data.train, args.batch_size, pre, shuffle=True, seed=args.seed, drop_last=True)
    batches = []
    for b in loader.epoch(0):
        batches.append(b.x)
        if len(batches) == args.steps:
            break
    load0 = os.getloadavg()[0]

    step = time_steps(batches, args.timed_steps, args.threads, args.lr)
    one = time_steps(batches[:4], max(3, args.timed_steps // 2), 1, args.lr)
    print("step seconds:", step, "1 thread:", one, flush=True)

    # (b) the same batches, the same initial weights; exact NLL in fp32
    torch.set_num_threads(args.threads)
    test = zspace.BatchLoader(data.test.head(args.eval_images), 500, pre, shuffle=False)
    trained = {}
    for name in ("before", "bf16"):
        cl, bf16, _ = VARIANTS[name]
        model = build(cl, seed=args.seed)
        fn = step_fn(model, bf16, args.lr)
        t0 = time.perf_counter()
        for x in batches:
            fn(x)
        seconds = time.perf_counter() - t0
        rep = evaluate_exact_likelihood(model, test.epoch(0))
        trained[name] = {"nll": rep.nll, "se": rep.nll_std_err, "train_seconds": seconds}
        print(name, trained[name], flush=True)
    load1 = os.getloadavg()[0]
    paired = trained["bf16"]["nll"] - trained["before"]["nll"]

    result = {"step_seconds": step, "step_seconds_1_thread": one, "threads": args.threads, "batch": args.batch_size,
              "trained": trained, "steps": len(batches), "load_average": [load0, load1],
              "command": command_line(), "machine": machine()}
    print(json.dumps(result, indent=2))
    base = step["before"]
    rows = "\n".join(f"| {name} | {s * 1e3:.0f} ms | **{base / s:.2f}×** | {one[name] * 1e3:.0f} ms | "
                     f"{one['before'] / one[name]:.2f}× |" for name, s in step.items())
    md = f"""### PixelCNN training step: layout, bf16, masks, threads (7 × 64, Bernoulli, MNIST)

Command: `{command_line()}`
Machine: {machine()}; AVX512-BF16 and AMX; 1-minute load average {load0:.1f} at the start and {load1:.1f} at
the end (other sessions shared the 2 cores, so absolute times are inflated; the variants were alternated step
by step, so their ratios are fair). Batch {args.batch_size}, Adam lr {args.lr:g}; median of {args.timed_steps}
steps ({max(3, args.timed_steps // 2)} at 1 thread).
before = NCHW fp32 (the old default); fp32 = channels_last fp32 (the default now); bf16 = channels_last +
`--precision bf16` (autocast); fp32 folded = masks multiplied into the weights once instead of every forward.

| variant | {args.threads} threads | speed-up | 1 thread | speed-up |
|---|---|---|---|---|
{rows}

Thread scaling of the default (fp32 channels_last): {one['fp32'] / step['fp32']:.2f}× from 1 to {args.threads} threads.

Equal likelihood after {len(batches)} steps (same initial weights and batches), exact NLL on the first
{args.eval_images} test images, fp32 evaluation:

| | train time | test NLL (nats) |
|---|---|---|
| before (NCHW fp32) | {trained['before']['train_seconds']:.0f} s | {trained['before']['nll']:.2f} ± {trained['before']['se']:.2f} |
| bf16 + channels_last | {trained['bf16']['train_seconds']:.0f} s | {trained['bf16']['nll']:.2f} ± {trained['bf16']['se']:.2f} |

Difference bf16 − before: {paired:+.2f} nats; speed-up of the whole {len(batches)}-step training
{trained['before']['train_seconds'] / trained['bf16']['train_seconds']:.2f}×.
"""
    update_section("pixelcnn-step", md)


if __name__ == "__main__":
    main()
