"""Speed of the importance-sampled NLL (k = 5000, encoder proposal) on the MNIST test set
with the 784-200-200-50 MLP VAE of Burda et al. (2016), at fp32, against (a) the previous
zspace estimator (kept below as `previous_estimator`: BCE-with-logits decoder density,
densities of z written with z) on a subset with the same draws, and (b) pythae 0.1.2's
`VAE.get_nll` on the same weights, on a subset (it loops over images in Python), in the same
run. GFLOP/s counts the decoder's matrix products, 2 k N (50*200 + 200*200 + 200*784), the
work every estimator must do; the floor is those products alone (three addmm calls on one
chunk's rows, timed in the same run and scaled to the whole estimate). zspace's estimator
runs its chunks through torch.compile at this size; the compilation is inside the timing.

The model: a run folder (--run); trained here first if missing (--train-epochs of the
likelihood benchmark's recipe: batch 100, Adam 3e-3 cosine, elu, seed 0). Its quality
does not change the estimator's speed.

    python benchmarks/likelihood_estimator.py --threads 2
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import zspace
from _common import ROOT, command_line, machine, update_section, use_shared_data
from zspace.evaluation import importance_sampled_log_likelihood

PYTHAE = Path(os.environ.get("PYTHAE_VENV", "/tmp/peer-pythae")) / "bin" / "python"   # as in vs_pythae.py


@torch.no_grad()
def previous_estimator(model, x, k, max_elements=1 << 24):
    """zspace's estimator before this benchmark existed (same draws as the new one)."""
    q = model.encode(x)
    chunk = max(1, min(k, max_elements // (x.shape[0] * model.num_dims)))
    total = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
    done = 0
    while done < k:
        n = min(chunk, k - done)
        z = q.rsample(n)
        logits = model.decoder(z.reshape(-1, z.shape[-1])).reshape(n, *x.shape)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(2).sum(-1)
        log_pz = -0.5 * (z ** 2 + math.log(2 * math.pi)).sum(-1)
        log_w = (log_px + log_pz - q.log_prob(z)).double()
        total = torch.logaddexp(total, torch.logsumexp(log_w, 0))
        done += n
    return total - math.log(k)


@torch.no_grad()
def products_floor(model, batch_size, k, n, repeats=300):
    """Seconds that the decoder's matrix products alone take for k samples of n images, in the
    estimator's chunks (its default 2^20 output values), best of three timings."""
    chunk = max(1, min(k, (1 << 20) // (batch_size * model.num_dims)))
    rows = chunk * batch_size
    linears = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(rows, lin.in_features) for lin in linears]
    weights = [(lin.bias, lin.weight.t()) for lin in linears]
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            for a, (b, w) in zip(inputs, weights):
                torch.addmm(b, a, w)
        best = min(best, (time.perf_counter() - t0) / repeats)
    return best * k * n / rows


def timed(fn, batches, k, seed):
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    ll = torch.cat([fn(b, k) for b in batches])
    return ll, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/bench-estimator-vae")
    ap.add_argument("--train-epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--previous-images", type=int, default=500, help="subset for the previous estimator")
    ap.add_argument("--pythae-images", type=int, default=100, help="subset for pythae's get_nll (0: skip)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    use_shared_data()
    torch.set_num_threads(args.threads)
    out = ROOT / args.run
    if not (out / "config.json").exists():
        zspace.train("vae", zspace.load_dataset("mnist"), out=out, progress=False, figures=False,
                     config=zspace.TrainConfig(epochs=args.train_epochs, batch_size=100, lr=3e-3, threads=args.threads,
                                               eval_limit=100, seed=0),
                     latent_dim=50, hidden=(200, 200), activation="elu")
    run = zspace.load_run(out)
    model = run.model.eval()
    batches = [b.x for b in run.loader("test", batch_size=args.batch_size, limit=args.images).epoch(0)]
    n = sum(len(x) for x in batches)
    dims = model.config.latent_dim, *model.config.hidden[::-1], model.num_dims
    flop_per_pass = 2 * sum(a * b for a, b in zip(dims[:-1], dims[1:]))

    def gflops(images, seconds):
        return flop_per_pass * args.samples * images / seconds / 1e9

    load = lambda: round(os.getloadavg()[0], 1)   # noqa: E731
    load0 = load()
    floor = products_floor(model, args.batch_size, args.samples, n)
    print(f"floor (the decoder's products alone): {floor / 60:.2f} min", flush=True)
    new = lambda x, k: importance_sampled_log_likelihood(model, x, k)            # noqa: E731
    old = lambda x, k: previous_estimator(model, x, k)                           # noqa: E731
    ll, sec = timed(new, batches, args.samples, args.seed)
    nll = -ll
    print(f"new: {n} images, k={args.samples}: {sec / 60:.2f} min, {gflops(n, sec):.1f} GFLOP/s, "
          f"NLL {nll.mean():.3f} ± {nll.std() / math.sqrt(n):.3f}", flush=True)

    sub = batches[:max(1, args.previous_images // args.batch_size)]
    m = sum(len(x) for x in sub)
    ll_new, sec_new = timed(new, sub, args.samples, args.seed + 1)
    ll_old, sec_old = timed(old, sub, args.samples, args.seed + 1)           # each at its own chunk size
    # the same draws need the same chunks (each chunk draws its (n, B, D) normals in turn)
    chunk = inspect.signature(importance_sampled_log_likelihood).parameters["max_elements"].default
    same_new, _ = timed(new, sub, args.samples, args.seed + 1)
    same_old, _ = timed(lambda x, k: previous_estimator(model, x, k, max_elements=chunk), sub, args.samples, args.seed + 1)
    diff = (same_new - same_old).abs().max().item()
    print(f"subset of {m}: new {sec_new:.1f} s, previous {sec_old:.1f} s ({sec_old / sec_new:.2f}x); "
          f"max |difference| per image {diff:.2e} nats", flush=True)
    nll_full_on_sub = nll[:m].mean().item()
    nll_old_sub = -ll_old.mean().item()
    se_sub = (-ll_old).std().item() / math.sqrt(m)

    py = None
    if args.pythae_images:
        work = Path("/tmp/zspace-estimator-bench")
        work.mkdir(exist_ok=True)
        np.savez(work / "weights.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
        imgs = torch.cat(batches)[:args.pythae_images]
        np.save(work / "images.npy", imgs.reshape(-1, 28, 28).numpy().astype(np.uint8))
        ll_sub, sec_sub = timed(new, [imgs], args.samples, args.seed + 2)
        subprocess.run([str(PYTHAE), str(ROOT / "benchmarks" / "peers" / "pythae_nll.py"), "--weights",
                        str(work / "weights.npz"), "--images", str(work / "images.npy"), "--samples",
                        str(args.samples), "--threads", str(args.threads), "--seed", str(args.seed),
                        "--out", str(work / "pythae.json")], check=True)
        py = json.loads((work / "pythae.json").read_text())
        py.update(zspace_seconds=sec_sub, zspace_nll=-ll_sub.mean().item(),
                  zspace_se=(-ll_sub).std().item() / math.sqrt(len(imgs)))
        print(f"pythae: {py['images']} images {py['seconds']:.1f} s (zspace {sec_sub:.1f} s, "
              f"{py['seconds'] / sec_sub:.1f}x), NLL {py['nll_nats']:.2f} (zspace {py['zspace_nll']:.2f})", flush=True)
    load1 = load()

    result = {"images": n, "samples": args.samples, "threads": args.threads, "seconds": sec, "floor_seconds": floor,
              "gflops": gflops(n, sec), "nll": nll.mean().item(), "nll_se": (nll.std() / math.sqrt(n)).item(),
              "previous": {"images": m, "seconds": sec_old, "new_seconds": sec_new, "max_abs_diff": diff,
                           "nll": nll_old_sub, "se": se_sub, "new_full_run_nll_same_images": nll_full_on_sub},
              "pythae": py, "load_average": [load0, load1], "command": command_line(), "machine": machine()}
    (out / "estimator-benchmark.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))

    target = "met" if sec <= 180 else "not met"
    py_rows = "" if py is None else (
        f"| pythae {py['pythae_version']} `VAE.get_nll` (batch_size {min(100, args.samples)}), same weights, "
        f"first {py['images']} images | {py['seconds']:.1f} s against zspace's {py['zspace_seconds']:.1f} s: "
        f"**{py['seconds'] / py['zspace_seconds']:.1f}× slower**; NLL {py['nll_nats']:.2f} against "
        f"{py['zspace_nll']:.2f} ± {py['zspace_se']:.2f} (different draws) |\n")
    md = f"""### Importance-sampled NLL: speed at fp32 (784-200-200-50 VAE, MNIST test set)

Command: `{command_line()}`
Machine: {machine()}; {args.threads} threads; 1-minute load average {load0} at the start and {load1} at the end
(wall-clock times; on this VM the same work varies by up to 1.5x between runs, so the floor is timed in the same run).
Model: `{args.run}` (MLP VAE, elu, Bernoulli decoder; {model.describe()}). Estimator: k = {args.samples}
importance samples per image, encoder proposal, batches of {args.batch_size} images, fp32, log-sum-exp in float64,
chunks through torch.compile (its compilation, ~10 s, inside the time).
GFLOP/s: the decoder's matrix products only ({flop_per_pass / 1e6:.2f} MFLOP per pass).

| | value |
|---|---|
| all {n} test images, k = {args.samples} | **{sec / 60:.2f} min**, {gflops(n, sec):.1f} GFLOP/s; NLL {nll.mean():.2f} ± {result['nll_se']:.2f} nats |
| the decoder's products alone, same chunks, same run (the floor) | {floor / 60:.2f} min: the estimator takes **{sec / floor:.2f}×** the floor |
| target ≤ 3 min | **{target}** |
| previous zspace estimator (its own chunks of 2^24 values), first {m} images | {sec_old:.1f} s against {sec_new:.1f} s: **{sec_old / sec_new:.2f}× slower**; run again with the new chunk size, so with the same draws, the largest difference per image is {diff:.1e} nats (same estimate) |
| the previous estimator's NLL on those {m} images vs the full run's (other draws) | {nll_old_sub:.2f} ± {se_sub:.2f} against {nll_full_on_sub:.2f} |
{py_rows}"""
    update_section("likelihood-estimator-speed", md)


if __name__ == "__main__":
    main()
