"""Test NLL on dynamically binarized MNIST with the MLP VAE of Burda et al. (2016):
784-200-200-50 (two deterministic hidden layers of 200 units, 50 latent units).

Trains for a wall-time budget (the number of epochs is set from a timed 3-epoch probe so
the cosine learning-rate schedule ends with the budget), records a cheap NLL estimate
(k = --curve-samples on the first --curve-images test images) against training wall
time, then reports the final importance-sampled NLL with k = --final-samples on the
full test set. Anchors: VAE 86.76 nats, IWAE k=5 85.54, IWAE k=50 84.78 (Burda et al.
2016, Table 1, 3,280 epochs).

    python benchmarks/likelihood_mnist.py --objective vae --budget-minutes 45
    python benchmarks/likelihood_mnist.py --objective iwae --k 5 --budget-minutes 45
"""
from __future__ import annotations

import argparse
import json

import torch

import zspace
from _common import ROOT, command_line, machine, update_section, use_shared_data
from zspace.evaluation import evaluate_likelihood
from zspace.rng import seeded

ANCHORS = {"vae": 86.76, "iwae": {5: 85.54, 50: 84.78}}
TARGETS = {"vae": 88.0, "iwae": 86.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objective", choices=("vae", "iwae"), default="vae")
    ap.add_argument("--k", type=int, default=5, help="samples of the IWAE objective")
    ap.add_argument("--budget-minutes", type=float, default=45.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--activation", default="elu", help="Burda et al. used tanh; elu learns faster here")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--final-samples", type=int, default=5000)
    ap.add_argument("--final-images", type=int, default=None, help="default: the full test set")
    ap.add_argument("--curve-samples", type=int, default=100)
    ap.add_argument("--curve-images", type=int, default=1000)
    ap.add_argument("--curve-every-minutes", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="run folder (default runs/bench-likelihood-OBJECTIVE)")
    args = ap.parse_args()

    use_shared_data()
    torch.set_num_threads(args.threads)
    k = args.k if args.objective == "iwae" else 1
    name = "vae" if k == 1 else f"iwae-k{k}"
    out = ROOT / (args.out or f"runs/bench-likelihood-{name}")
    data = zspace.load_dataset("mnist")
    model_opts = dict(latent_dim=50, hidden=(200, 200), activation=args.activation, iw_samples=k)

    # Time three epochs to fit the schedule to the budget: the slowest of the last two (the first
    # pays start-up, which overestimated the steady epochs by 18% and ended a run at 48 of 58 minutes).
    probe = []
    zspace.train("vae", data, config=zspace.TrainConfig(epochs=3, batch_size=args.batch_size,
                 lr=args.lr, threads=args.threads, eval_every=3, eval_limit=100), progress=False, figures=False,
                 on_epoch_end=lambda trainer, row: probe.append(row["wall_seconds"]), **model_opts)
    epoch_s = max(probe[1] - probe[0], probe[2] - probe[1])
    epochs = max(1, int(args.budget_minutes * 60 / (epoch_s * 1.03)))
    print(f"{name}: {epoch_s:.2f} s/epoch -> {epochs} epochs for {args.budget_minutes} min", flush=True)

    curve_data = data.test.head(args.curve_images)
    curve = []
    last = [-1e9]

    def on_epoch_end(trainer, row):
        if row["wall_seconds"] - last[0] < args.curve_every_minutes * 60 and row["step"] < trainer.total_steps:
            return
        last[0] = row["wall_seconds"]
        loader = zspace.BatchLoader(curve_data, 500, trainer.pre, shuffle=False, seed=12345)
        with seeded(1):
            rep = evaluate_likelihood(trainer.model, loader.epoch(0), args.curve_samples)
        point = {"train_minutes": round(row["wall_seconds"] / 60, 2), "epoch": row["epoch"],
                 "nll": round(rep.nll, 3), "elbo": round(rep.elbo, 3)}
        curve.append(point)
        print(f"  curve: {point}", flush=True)

    cfg = zspace.TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
                             lr_schedule="cosine", lr_final_fraction=0.05, eval_every=10,
                             eval_limit=2000, seed=args.seed)
    run = zspace.train("vae", data, out=out, config=cfg, progress=False, overwrite=True,
                       on_epoch_end=on_epoch_end, **model_opts)
    train_minutes = run.history()[-1]["wall_seconds"] / 60

    loader = run.loader("test", batch_size=100, limit=args.final_images)
    with seeded(2):
        rep = evaluate_likelihood(run.model, loader.epoch(0), args.final_samples)
    anchor = ANCHORS["vae"] if k == 1 else ANCHORS["iwae"].get(k)
    target = TARGETS[args.objective]
    result = {"model": name, "epochs": epochs, "train_minutes": round(train_minutes, 2),
              "seconds_per_epoch": round(train_minutes * 60 / epochs, 2), "threads": args.threads,
              "activation": args.activation, "final": rep.as_dict(), "curve": curve,
              "anchor": anchor, "target": target, "command": command_line(), "machine": machine()}
    (out / "benchmark.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))

    rows = "\n".join(f"| {p['train_minutes']:.1f} | {p['epoch']} | {p['nll']:.2f} | {-p['elbo']:.2f} |" for p in curve)
    in_hour = train_minutes <= 60   # both targets are "in 1 CPU hour": a schedule that overran misses them
    late = "" if in_hour else f", but training took {train_minutes:.1f} min"
    verdict = "met" if rep.nll <= target and in_hour else f"not met{late}"
    below = anchor is not None and rep.nll < anchor
    md = f"""### MNIST likelihood: {name} (784-200-200-50, dynamically binarized)

Command: `{command_line()}`
Machine: {machine()}; {args.threads} thread(s).

| | value |
|---|---|
| training | {epochs} epochs, {train_minutes:.1f} min wall time, batch {args.batch_size}, Adam lr {args.lr} cosine to 5%, {args.activation} |
| test NLL, importance-sampled (k = {rep.num_samples}, encoder proposal, {rep.num_examples} test images) | **{rep.nll:.2f} ± {rep.nll_std_err:.2f} nats** ({rep.bits_per_dim:.4f} bits/dim) |
| test ELBO (one sample) | {rep.elbo:.2f} nats (reconstruction {rep.rec:.2f}, KL {rep.kl:.2f}) |
| anchor (Burda et al. 2016, Table 1, 3,280 epochs) | {anchor} nats: {("below it" + late) if below else "not below it"} (issue 20's target: below it in 1 h) |
| target | ≤ {target} nats in ≤ 1 h: **{verdict}** |
| final estimate took | {rep.seconds / 60:.1f} min |

NLL against training wall time (estimator: k = {args.curve_samples} importance samples on the first {args.curve_images} test images; evaluation time not counted):

| train min | epoch | NLL (nats) | −ELBO (nats) |
|---|---|---|---|
{rows}
"""
    update_section(f"likelihood-{name}", md)


if __name__ == "__main__":
    main()
