"""What the command line's defaults cost on this CPU, and what they give up.

    flock /tmp/zspace-bench.lock python benchmarks/cli_defaults.py --threads 2

1. A VAE (MLP 512-256, z = 32, Bernoulli, dynamically binarized Fashion-MNIST) trained for
   --epochs epochs; then `zspace eval`'s default, k = 100 importance samples on the whole test
   split, timed, with its standard error; and k = 100 against the literature's k = 1000 on the
   first --subset test images (the same images, the same seed), so the bound's looseness at the
   default and the time k = 1000 would take on the whole split (scaled from the subset) are
   measured, not guessed.
2. `zspace scorecard`'s default N for that run, timed.
3. A detector fit (VAE, NLL score, 5 epochs) on ODDS annthyroid with one thread (the small-fit
   default) and with --threads, timed: why small fits use one thread.
4. `zspace compare --out DIR` with its defaults (8 variants, 5 epochs, the first 10,000 MNIST
   training images), timed end to end through the command line, with the best linear probe it
   reports; the full setting (`--epochs 10 --train-limit 0`) is benchmarks/autoencoders.py's.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import SHARED_DATA, command_line, machine, update_section, use_shared_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--subset", type=int, default=1000)
    args = ap.parse_args()
    use_shared_data()
    torch.set_num_threads(args.threads)
    import zspace
    from zspace.cli import main as zspace_main
    from zspace.compare import COMPARE_EPOCHS, COMPARE_TRAIN_LIMIT, FULL_SETTING
    from zspace.core.progress import showing
    from zspace.detect import GenerativeOutlierDetector
    from zspace.scorecard import SCORECARD_N, scorecard
    from zspace.tasks import DEFAULT_NLL_SAMPLES, LITERATURE_NLL_SAMPLES, evaluate_run

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, showing(False):
        t0 = time.perf_counter()
        run = zspace.train("vae", "fashion-mnist", out=Path(tmp) / "vae", latent_dim=32, hidden=(512, 256),
                           config=zspace.TrainConfig(epochs=args.epochs, batch_size=128, seed=0,
                                                     threads=args.threads, eval_limit=1000),
                           progress=False, figures=False)
        train_s = time.perf_counter() - t0
        print(f"VAE trained: {train_s:.0f} s", flush=True)
        t0 = time.perf_counter()
        full = evaluate_run(run, "test", nll_samples=DEFAULT_NLL_SAMPLES, batch_size=100, seed=0).likelihood
        default_s = time.perf_counter() - t0
        print(f"eval k={DEFAULT_NLL_SAMPLES}: {default_s:.0f} s", flush=True)
        sub = {}
        for k in (DEFAULT_NLL_SAMPLES, LITERATURE_NLL_SAMPLES):
            t0 = time.perf_counter()
            rep = evaluate_run(run, "test", nll_samples=k, batch_size=100, limit=args.subset, seed=0).likelihood
            sub[k] = (rep, time.perf_counter() - t0)
            print(f"eval k={k} on {args.subset}: {sub[k][1]:.0f} s", flush=True)
        t0 = time.perf_counter()
        scorecard([run], n=SCORECARD_N)
        card_s = time.perf_counter() - t0
        print(f"scorecard N={SCORECARD_N}: {card_s:.0f} s", flush=True)

        odds = np.load(SHARED_DATA / "odds" / "annthyroid.npz")
        x = odds["x"].astype(np.float32)
        fits = {}
        for threads in (None, args.threads):   # None: the small-fit default (one thread for this size)
            det = GenerativeOutlierDetector("vae", "nll", epochs=5, random_state=0, threads=threads)
            t0 = time.perf_counter()
            det.fit(x)
            fits[threads] = time.perf_counter() - t0
            print(f"detector fit, threads {threads or 'default (1)'}: {fits[threads]:.1f} s", flush=True)

        out = Path(tmp) / "compare"
        compare_argv = ["compare", "--out", str(out), "--threads", str(args.threads), "--no-progress"]
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = zspace_main(compare_argv)
        compare_s = time.perf_counter() - t0
        if code != 0:
            raise SystemExit(f"zspace {' '.join(compare_argv)} failed with status {code}")
        rows = list(csv.DictReader((out / "comparison.csv").open()))
        print(f"compare defaults: {compare_s:.0f} s", flush=True)

    lo, hi = sub[DEFAULT_NLL_SAMPLES][0], sub[LITERATURE_NLL_SAMPLES][0]
    full_k1000 = sub[LITERATURE_NLL_SAMPLES][1] * full.num_examples / args.subset
    best = max(rows, key=lambda r: float(r["probe_accuracy"]))
    pca = next(r for r in rows if r["variant"] == "pca")
    md = f"""### The command line's defaults on this CPU

Command: `{command_line()}` ({(time.perf_counter() - start) / 60:.1f} min)
Machine: {machine()}; {args.threads} threads (shared with other jobs: times are indicative).
Model: VAE, MLP 512-256, z = 32, Bernoulli, Fashion-MNIST dynamically binarized, {args.epochs} epochs
({train_s:.0f} s). NLL: importance-sampled bound, nats per image, ± one standard error over images.

| what | default | time | the full setting |
|---|---|---|---|
| `zspace eval` (whole test split, {full.num_examples} images) | k = {DEFAULT_NLL_SAMPLES}: NLL {full.nll:.2f} ± {full.nll_std_err:.2f} | {default_s:.0f} s | `--nll-samples {LITERATURE_NLL_SAMPLES}`: ~{full_k1000 / 60:.0f} min (scaled from {args.subset} images) |
| the same on the first {args.subset} test images | k = {DEFAULT_NLL_SAMPLES}: NLL {lo.nll:.2f} ± {lo.nll_std_err:.2f} | {sub[DEFAULT_NLL_SAMPLES][1]:.0f} s | k = {LITERATURE_NLL_SAMPLES}: NLL {hi.nll:.2f} ± {hi.nll_std_err:.2f}, {sub[LITERATURE_NLL_SAMPLES][1]:.0f} s; the bound tightens by {lo.nll - hi.nll:.2f} nats |
| `zspace scorecard` (this one run) | N = {SCORECARD_N} | {card_s:.0f} s | `-n 10000` |
| detector fit, VAE + NLL, 5 epochs, annthyroid ({len(x)} x {x.shape[1]}) | 1 thread (small fits) | {fits[None]:.1f} s | `--threads {args.threads}`: {fits[args.threads]:.1f} s |
| `zspace compare --out DIR` (MNIST, {len(rows)} variants, {COMPARE_EPOCHS} epochs, first {COMPARE_TRAIN_LIMIT} training images) | best linear probe {best['variant']} {float(best['probe_accuracy']):.4f} (PCA {float(pca['probe_accuracy']):.4f}) | {compare_s / 60:.1f} min | `{FULL_SETTING}`: benchmarks/autoencoders.py |
"""
    update_section("cli-defaults", md)
    print(md)


if __name__ == "__main__":
    main()
