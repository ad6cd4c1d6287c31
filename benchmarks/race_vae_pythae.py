"""Time to quality against tuned pythae: the MNIST VAE 784-200-200-50 (Bernoulli decoder, elu,
dynamically binarized MNIST), each library with its own recipe, in one run on the same threads.

pythae 0.1.2 (its own venv, as in vs_pythae.py) trains for --pythae-epochs at lr 1e-3 (tuned: its
default 1e-4 is slower) once for every batch size in --pythae-batch-sizes, so its best batch size is
in the race. zspace trains once for every budget in --zspace-epochs, each a complete run whose cosine
schedule ends with its budget (what a zspace user does for a short budget), at batch 100 and lr 5e-3.
Every model is scored with its library's own importance-sampled estimator, k = --nll-samples, on the
same binarized test images; evaluation time is not training time.

For each pythae batch size: pythae's training time T and final NLL; zspace's shortest run whose
final NLL is at or below it, and that run's training time t. Target: t / T <= 1/3 against every
pythae batch size (so also against its best one).

    python benchmarks/race_vae_pythae.py --threads 2
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import zspace
from _common import command_line, machine, update_section, use_shared_data
from vs_pythae import ensure_pythae, run_pythae, zspace_nll


def ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pythae-epochs", type=int, default=20)
    ap.add_argument("--pythae-batch-sizes", type=ints, default=ints("50,100,200"))
    ap.add_argument("--pythae-lr", type=float, default=1e-3)
    ap.add_argument("--zspace-epochs", type=ints, default=ints("6,7,8,9,10,11,12,13,14"),
                    help="one complete zspace run per budget, its cosine schedule fitted to it")
    ap.add_argument("--zspace-lr", type=float, default=5e-3)
    ap.add_argument("--zspace-batch-size", type=int, default=100)
    ap.add_argument("--nll-samples", type=int, default=1000)
    ap.add_argument("--nll-images", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/zspace-race-vae-pythae")
    ap.add_argument("--reuse-pythae", action="store_true",
                    help="keep pythae's results from an earlier run in --work (exploring zspace's budgets; "
                         "the published race runs both)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args()
    use_shared_data()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    # ---- pythae, one run per batch size ---------------------------------------------------
    py = ensure_pythae()
    pythae = []
    for b in args.pythae_batch_sizes:
        out = work / f"pythae-b{b}.json"
        r = (json.loads(out.read_text()) if args.reuse_pythae and out.exists() else
             run_pythae(py, out, work, epochs=args.pythae_epochs, batch_size=b, lr=args.pythae_lr,
                        threads=args.threads, activation="elu", nll_samples=args.nll_samples,
                        nll_images=args.nll_images, seed=args.seed))
        pythae.append({"batch_size": b, "train_seconds": r["train_seconds"], "nll": r["nll_nats"],
                       "nll_seconds": r["nll_seconds"], "version": r["pythae_version"]})
        print(f"[pythae] batch {b}: {r['train_seconds']:.0f} s, NLL {r['nll_nats']:.2f}", flush=True)
    test_bin = np.load(work / f"test_bin_seed{args.seed}.npy").astype(np.float32)   # the same images for all
    test = zspace.ArrayData.from_arrays(test_bin, name="mnist-test-binarized-by-pythae")

    # ---- zspace, one complete run per budget -------------------------------------------------
    data = zspace.load_dataset("mnist")
    ours = []
    for epochs in sorted(args.zspace_epochs):
        cfg = zspace.TrainConfig(epochs=epochs, batch_size=args.zspace_batch_size, lr=args.zspace_lr,
                                 lr_schedule="cosine", threads=args.threads, seed=args.seed,
                                 eval_every=epochs, eval_limit=100)
        t0 = time.perf_counter()   # the whole call, as pythae's time is its whole pipeline call
        run = zspace.train("vae", data, config=cfg, progress=False, figures=False,
                           latent_dim=50, hidden=(200, 200), activation="elu")
        seconds = time.perf_counter() - t0
        rep = zspace_nll(run.model, test, args.nll_samples, args.seed)
        ours.append({"epochs": epochs, "train_seconds": seconds, "nll": rep.nll,
                     "nll_se": rep.nll_std_err, "nll_seconds": rep.seconds})
        print(f"[zspace] {epochs} epochs: {seconds:.0f} s, NLL {rep.nll:.2f}", flush=True)

    # ---- the race ------------------------------------------------------------------------
    pairs = []
    for p in pythae:
        reach = next((o for o in ours if o["nll"] <= p["nll"]), None)   # ours is sorted by budget
        pairs.append({"pythae_batch_size": p["batch_size"], "pythae_seconds": p["train_seconds"],
                      "pythae_nll": p["nll"], "zspace_epochs": reach and reach["epochs"],
                      "zspace_seconds": reach and reach["train_seconds"],
                      "fraction": reach and reach["train_seconds"] / p["train_seconds"]})
    met = all(q["fraction"] is not None and q["fraction"] <= 1 / 3 for q in pairs)
    result = {"pythae": pythae, "zspace": ours, "race": pairs, "met": met,
              "command": command_line(), "machine": machine()}
    (work / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if args.no_write:
        return

    def frac(q):
        return (f"{q['zspace_seconds']:.0f} s ({q['zspace_epochs']} epochs): **{q['fraction']:.2f}**"
                if q["fraction"] is not None else "not reached by any budget")

    p_rows = "\n".join(f"| {p['batch_size']} | {p['train_seconds']:.0f} s | {p['nll']:.2f} | {frac(q)} |"
                       for p, q in zip(pythae, pairs))
    z_rows = "\n".join(f"| {o['epochs']} | {o['train_seconds']:.0f} s | {o['nll']:.2f} ± {o['nll_se']:.2f} |"
                       for o in ours)
    md = f"""### Race: time to pythae's NLL, MNIST VAE 784-200-200-50, pythae tuned (lr {args.pythae_lr:g}, batch sizes {", ".join(map(str, args.pythae_batch_sizes))})

Command: `{command_line()}`
Machine: {machine()}; every run on {args.threads} thread(s), one after another in the same run.
Both: dynamically binarized MNIST (60,000 training images), Bernoulli decoder, elu, Adam, seed {args.seed}.
pythae {pythae[0]['version']}: {args.pythae_epochs} epochs at a constant lr {args.pythae_lr:g} (its trainer has no
schedule), once per batch size. zspace: one complete run per budget, batch {args.zspace_batch_size}, lr {args.zspace_lr:g}
cosine over the budget. NLL: each library's own importance-sampled estimator (encoder proposal),
k = {args.nll_samples}, on the same {len(test)} test images binarized once (seed {args.seed}); the ± is the standard
error over images (the images are shared, so the comparison is paired). Training time: the whole
training call on both sides (pythae's pipeline, with its final save; zspace's `train`, with its
start-up and a 100-image evaluation at the end, no run folder), not the scoring with k = {args.nll_samples}.

| pythae batch | pythae training | pythae NLL (nats) | zspace's shortest run at or below it: time, fraction of pythae's |
|---|---|---|---|
{p_rows}

| zspace budget (epochs) | training | NLL (nats) |
|---|---|---|
{z_rows}

Target ≤ 1/3 of pythae's time against every batch size: **{"met" if met else "not met"}**.
"""
    update_section("race-vae-pythae", md)


if __name__ == "__main__":
    main()
