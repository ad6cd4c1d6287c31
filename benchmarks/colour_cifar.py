"""CIFAR-10 (from the JPEG zip) in colour: bits/dim of a residual VAE and of a colour PixelCNN after
a fixed short CPU budget, with their test curves against training time, and samples as figures.

VAE: resnet encoder/decoder, discretized logistic decoder over the 8-bit subpixels, test NLL by
importance sampling. With ``--scorecard N`` both runs also go through ``zspace.scorecard`` on N
samples each, on the shipped FID-CIFARNet extractor (``python -m zspace.evaluation.features --data
cifar10``), beside the real test images' floor. PixelCNN: gated, with PixelCNN++'s coupled logistic mixture over R, G, B
(exact NLL). Both on the same 1,000 test images. CIFAR-10 here is decoded from JPEG quality 75,
so its bits/dim is not comparable with the literature's lossless-set figures (given for orientation).

    flock /tmp/zspace-bench.lock python benchmarks/colour_cifar.py --threads 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

import zspace
from _common import ROOT, command_line, machine, update_section
from zspace.report.figures import save_samples
from zspace.scorecard import scorecard
from zspace.tasks import evaluate_run

OUT = ROOT / "runs" / "bench-colour-cifar"
FIGS = ROOT / "docs" / "figures"
DIMS = 3 * 32 * 32


def curve(run, key: str) -> str:
    """(minutes, test bits/dim) of the per-interval evaluations (bound for the VAE's ELBO)."""
    sign = -1 if key == "test_elbo" else 1
    return ", ".join(f"{r['wall_seconds'] / 60:.1f} min: {sign * r[key] / DIMS / math.log(2):.2f}"
                     for r in run.history() if key in r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae-steps", type=int, default=120)
    ap.add_argument("--pixelcnn-steps", type=int, default=90)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=1000, help="test images evaluated")
    ap.add_argument("--nll-samples", type=int, default=100)
    ap.add_argument("--scorecard", type=int, default=0, metavar="N",
                    help="also the scorecard of both runs on N samples each (FID-CIFARNet); 0: skip")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ZSPACE_DATA", str(ROOT.parent / "shared" / "data" / "images"))
    facts, runs = {}, []
    jobs = {
        "vae": dict(model="vae", steps=args.vae_steps, lr=2e-3,
                    options=dict(architecture="resnet", channels=(32, 64), blocks=0, latent_dim=64,
                                 likelihood="logistic")),
        "pixelcnn": dict(model="gated-pixelcnn", steps=args.pixelcnn_steps, lr=2e-3,
                         options=dict(head="logistic-mixture", mixtures=5, channels=32, residual_blocks=3,
                                      head_channels=64, first_kernel=5)),
    }
    for name, job in jobs.items():
        cfg = zspace.TrainConfig(epochs=None, steps=job["steps"], batch_size=args.batch_size, lr=job["lr"],
                                 seed=0, eval_limit=200, eval_every_steps=max(1, job["steps"] // 3),
                                 threads=args.threads, grad_clip=1.0)
        start = time.perf_counter()
        run = zspace.train(job["model"], "cifar10", out=OUT / name, preprocessing="scale" if name == "vae" else "uint8",
                           config=cfg, progress=False, overwrite=True, **job["options"])
        train_s = time.perf_counter() - start
        runs.append(run)
        ev = evaluate_run(run, nll_samples=args.nll_samples, limit=args.limit, batch_size=100)
        save_samples(run, FIGS / f"cifar10-{name}-samples.png", n=36, seed=0)
        facts[name] = dict(describe=run.describe(), train_s=train_s, bits_per_dim=ev.likelihood.bits_per_dim,
                           nll=ev.likelihood.nll, exact=ev.exact, kind=ev.meaning.kind, steps=job["steps"],
                           curve=curve(run, "test_elbo" if name == "vae" else "test_nll"),
                           params=sum(p.numel() for p in run.model.parameters()))
        print(name, json.dumps(facts[name]), flush=True)
    rows = "\n".join(
        f"| {f['describe']} ({f['params'] / 1e3:.0f}k parameters) | {f['steps']} x {args.batch_size} "
        f"({f['steps'] * args.batch_size / 50000:.2f} epochs), {f['train_s'] / 60:.1f} min | "
        f"**{f['bits_per_dim']:.3f}** ({'exact' if f['exact'] else f'IS k = {args.nll_samples}'}) | {f['curve']} |"
        for f in facts.values())
    md = f"""### CIFAR-10 in colour: bits/dim after a short CPU budget

Command: `{command_line()}`
Machine: {machine()}; {args.threads} threads, shared with other jobs (times are wall clock).
Data: cifar10-jpg.zip, 50,000 training images, test NLL on the first {args.limit} of the 10,000 test images;
Adam, seed 0, gradient norm clipped at 1. **Decoded from JPEG quality 75: not comparable with the literature's
lossless CIFAR-10**, where PixelCNN reaches 3.14 bits/dim (van den Oord et al. 2016), gated PixelCNN 3.03
(van den Oord et al. 2016b) and PixelCNN++ 2.92 (Salimans et al. 2017) after days of GPU training; the budget here
is minutes of two CPU cores, a gap of four to five orders of magnitude in compute, and the numbers show where a
short run stands, not what the models reach.

| model | training | test bits/dim | test curve (wall time: bits/dim on 200 test images; VAE: the ELBO bound) |
|---|---|---|---|
{rows}

Figures: [VAE samples](../docs/figures/cifar10-vae-samples.png) (decoder means of z ~ N(0, I)),
[PixelCNN samples](../docs/figures/cifar10-pixelcnn-samples.png) (cached sampling, R then G then B through the
coupled mixture).
"""
    if args.scorecard:
        start = time.perf_counter()
        card = scorecard(runs, n=args.scorecard, seed=0)
        md += (f"\nScorecard (`zspace.scorecard`, N = {args.scorecard} samples per model against {args.scorecard} "
               f"training images, {(time.perf_counter() - start) / 60:.1f} min; features: {card.extractor}; the "
               f"first row is real test images, the floor at this N):\n\n{card.markdown()}\n")
    update_section("colour-cifar10", md)
    print(md)


if __name__ == "__main__":
    main()
