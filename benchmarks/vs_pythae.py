"""zspace and pythae side by side: same VAE (784-200-200-50, Bernoulli decoder), same
dynamically binarized MNIST, batch size, optimiser (Adam, lr 1e-3) and epoch budget, in
one run, on the same threads.

pythae 0.1.2 runs in its own venv (created under /tmp if missing: torch==2.13.0 first,
then pythae) through benchmarks/peers/pythae_side.py. Both models are evaluated with
their own importance-sampled NLL estimator, with the same k, on the same binarized test
images (pythae's harness writes them; zspace reads that array).

Reports: per-epoch wall-time ratio, NLL-estimator time ratio, test NLL of both, and the
zspace training time needed to reach pythae's final NLL (target: at most a third of
pythae's training time).

    python benchmarks/vs_pythae.py --epochs 20 --threads 2
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import zspace
from _common import ROOT, command_line, machine, update_section, use_shared_data
from zspace.evaluation import evaluate_likelihood
from zspace.rng import seeded

VENV = Path(os.environ.get("PYTHAE_VENV", "/tmp/peer-pythae"))   # the peers' venvs live under /tmp


def ensure_pythae() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "pythae==0.1.2"], check=True)
    return py


def run_pythae(py: Path, out: Path, work: Path, *, epochs: int, batch_size: int, lr: float, threads: int,
               activation: str, nll_samples: int, nll_images: int, seed: int, train_limit: int | None = None) -> dict:
    """pythae trained and scored by benchmarks/peers/pythae_side.py in its venv; its result JSON. It also
    writes the test images it binarized, work/test_bin_seedSEED.npy, for zspace to score on."""
    subprocess.run([str(py), str(ROOT / "benchmarks" / "peers" / "pythae_side.py"),
                    "--epochs", str(epochs), "--batch-size", str(batch_size), "--threads", str(threads),
                    "--lr", str(lr), "--activation", activation, "--nll-samples", str(nll_samples),
                    "--nll-limit", str(nll_images), "--seed", str(seed),
                    "--data", str(Path(zspace.data.search_dirs("mnist")[0]) / "mnist.npz"),
                    "--bench-dir", str(work), "--out", str(out)]
                   + (["--train-limit", str(train_limit)] if train_limit else []), check=True)
    return json.loads(out.read_text())


def zspace_nll(model, test, nll_samples: int, seed: int):
    """zspace's own importance-sampled estimate on pythae's binarized test images, with fixed draws."""
    loader = zspace.BatchLoader(test, 100, zspace.Preprocessing("scale"), shuffle=False)
    with seeded(seed + 12345):
        return evaluate_likelihood(model, loader.epoch(0), nll_samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--activation", default="elu")
    ap.add_argument("--nll-samples", type=int, default=1000)
    ap.add_argument("--nll-images", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pythae-lr", type=float, default=1e-3, help="pythae's own default is 1e-4 (slower)")
    ap.add_argument("--zspace-lr", type=float, default=5e-3)
    ap.add_argument("--zspace-schedule", default="cosine")
    ap.add_argument("--work", default="/tmp/zspace-vs-pythae")
    ap.add_argument("--train-limit", type=int, default=None,
                    help="both train on the first N training images only (a quick per-epoch ratio)")
    args = ap.parse_args()
    use_shared_data()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    # ---- pythae ---------------------------------------------------------------------
    py = ensure_pythae()
    pyt = run_pythae(py, work / "pythae.json", work, epochs=args.epochs, batch_size=100, lr=args.pythae_lr,
                     threads=args.threads, activation=args.activation, nll_samples=args.nll_samples,
                     nll_images=args.nll_images, seed=args.seed, train_limit=args.train_limit)
    test_bin = np.load(work / f"test_bin_seed{args.seed}.npy").astype(np.float32)   # (N, 28, 28) in {0, 1}
    test = zspace.ArrayData.from_arrays(test_bin, name="mnist-test-binarized-by-pythae")

    # ---- zspace, same budget; NLL after every epoch (evaluation time not counted) -----------
    data = zspace.load_dataset("mnist")
    if args.train_limit:
        data = dataclasses.replace(data, train=data.train.head(args.train_limit))
    curve = []

    def on_epoch_end(trainer, row):
        rep = zspace_nll(trainer.model, test, args.nll_samples, args.seed)
        curve.append({"epoch": row["epoch"], "train_seconds": row["wall_seconds"], "nll": rep.nll})
        print(f"[zspace] epoch {row['epoch']}: {row['wall_seconds']:.1f}s, NLL {rep.nll:.2f}", flush=True)

    cfg = zspace.TrainConfig(epochs=args.epochs, batch_size=100, lr=args.zspace_lr,
                             lr_schedule=args.zspace_schedule,
                             threads=args.threads, seed=args.seed, eval_every=args.epochs, eval_limit=100)
    run = zspace.train("vae", data, config=cfg, progress=False, figures=False, on_epoch_end=on_epoch_end,
                       latent_dim=50, hidden=(200, 200), activation=args.activation)
    final = zspace_nll(run.model, test, args.nll_samples, args.seed)

    zs_epoch = np.diff([0.0] + [c["train_seconds"] for c in curve])
    py_epoch = np.asarray(pyt["epoch_seconds"])
    reach = next((c for c in curve if c["nll"] <= pyt["nll_nats"]), None)
    result = {
        "epochs": args.epochs, "threads": args.threads, "activation": args.activation,
        "nll_samples": args.nll_samples, "nll_images": len(test),
        "pythae": {k: pyt[k] for k in ("pythae_version", "train_seconds", "nll_nats", "nll_seconds",
                                       "nll_samples", "epoch_seconds")},
        "zspace": {"train_seconds": curve[-1]["train_seconds"], "nll_nats": final.nll,
                   "nll_seconds": final.seconds, "epoch_seconds": zs_epoch.tolist(), "curve": curve},
        "epoch_time_ratio_pythae_over_zspace": float(np.median(py_epoch) / np.median(zs_epoch)),
        "nll_time_ratio_pythae_over_zspace": pyt["nll_seconds"] / final.seconds,
        "zspace_seconds_to_reach_pythae_final_nll": reach["train_seconds"] if reach else None,
        "command": command_line(), "machine": machine(),
    }
    frac = (reach["train_seconds"] / pyt["train_seconds"]) if reach else None
    result["reach_fraction_of_pythae_train_time"] = frac
    (work / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))

    verdict = ("met" if frac is not None and frac <= 1 / 3 else "not met")
    reach_txt = (f"{reach['train_seconds']:.0f} s (epoch {reach['epoch']}) = {frac:.2f} of pythae's "
                 f"{pyt['train_seconds']:.0f} s" if reach else "not reached within the budget")
    md = f"""### Side by side with pythae {pyt['pythae_version']} (pythae lr {args.pythae_lr:g}): MNIST VAE 784-200-200-50

Command: `{command_line()}`
Machine: {machine()}; both on {args.threads} thread(s), one after the other in the same run.
Set-up for both: dynamically binarized MNIST ({len(data.train):,} training images), Bernoulli decoder,
{args.activation}, batch 100, Adam, {args.epochs} epochs. Learning rate, each library's recipe:
pythae {args.pythae_lr:g} constant (its default trainer has no schedule; its default lr, 1e-4, is slower);
zspace {args.zspace_lr:g} with a {args.zspace_schedule} schedule. The epoch-time and estimator-time
ratios compare the libraries at equal work; the time to reach pythae's NLL also
includes the recipe.
NLL: each library's own importance-sampled estimator (encoder proposal), k = {args.nll_samples},
on the same {len(test)} test images binarized once (seed {args.seed}).

| | pythae | zspace | ratio pythae / zspace |
|---|---|---|---|
| median epoch wall time | {np.median(py_epoch):.2f} s | {np.median(zs_epoch):.2f} s | **{result['epoch_time_ratio_pythae_over_zspace']:.2f}×** |
| training wall time, {args.epochs} epochs | {pyt['train_seconds']:.0f} s | {curve[-1]['train_seconds']:.0f} s | {pyt['train_seconds'] / curve[-1]['train_seconds']:.2f}× |
| NLL estimator wall time (k = {args.nll_samples}, {len(test)} images) | {pyt['nll_seconds']:.1f} s | {final.seconds:.1f} s | **{result['nll_time_ratio_pythae_over_zspace']:.1f}×** |
| final test NLL | {pyt['nll_nats']:.2f} nats | {final.nll:.2f} nats | |

zspace reaches pythae's final NLL after {reach_txt}. Target ≤ 1/3: **{verdict}**.
"""
    update_section(f"vs-pythae-lr{args.pythae_lr:g}" + (f"-train{args.train_limit}" if args.train_limit else ""), md)


if __name__ == "__main__":
    main()
