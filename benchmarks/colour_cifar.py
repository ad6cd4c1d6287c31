"""CIFAR-10 (from the JPEG zip) in colour: bits/dim of a residual VAE and of a colour PixelCNN against
training time, a VQ-VAE over 8x8 tiles with two priors, and the scorecard of all of them.

VAE: resnet encoder/decoder, discretized logistic decoder over the 8-bit subpixels, test NLL by
importance sampling. PixelCNN: gated, with PixelCNN++'s coupled logistic mixture over R, G, B (exact
NLL). ``--budget-minutes`` fits each one's step count to a time budget from a 40-step probe (the cosine
schedule then ends with the budget). ``--jobs tiles``: a resnet VQ-VAE (8x8 codes) and a gated
PixelCNN and a causal transformer over its code grids. Each job saves its facts, and the table is
rendered from all saved facts, so jobs can run as separate processes (one thread each) side by side.
``--scorecard N`` then scores every saved run on N samples on the shipped FID-CIFARNet extractor
(``python -m zspace.evaluation.features --data cifar10``), beside the real test images' floor. CIFAR-10
here is decoded from JPEG quality 75, so its bits/dim is not comparable with the literature's
lossless-set figures (given for orientation).

    python benchmarks/colour_cifar.py --threads 1 --jobs pixelcnn --budget-minutes 75 --pixelcnn-channels 64 \
        --pixelcnn-blocks 5 --mixtures 10 --precision bf16 --curve-points 10 &
    python benchmarks/colour_cifar.py --threads 1 --jobs vae tiles --budget-minutes 62 --vae-channels 64,128 \
        --vae-blocks 1 --precision bf16 --curve-points 10 --nll-samples 50 --limit 500
    python benchmarks/colour_cifar.py --threads 2 --scorecard 500 --nll-samples 20 --limit 200
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time

import numpy as np
import torch

import zspace
from _common import ROOT, command_line, machine, update_section, vqvae_test_quality
from zspace.core.io import write_text_atomic
from zspace.evaluation import evaluate_exact_likelihood
from zspace.prior import train_prior
from zspace.report.figures import save_reconstructions, save_samples
from zspace.scorecard import scorecard
from zspace.tasks import evaluate_run
from zspace.training.trainer import Callback

OUT = ROOT / "runs" / "bench-colour-cifar"
FIGS = ROOT / "docs" / "figures"
DIMS = 3 * 32 * 32


def curve(run, key: str) -> str:
    """(minutes, test bits/dim) of the per-interval evaluations (bound for the VAE's ELBO)."""
    sign = -1 if key == "test_elbo" else 1
    return ", ".join(f"{r['wall_seconds'] / 60:.1f} min: {sign * r[key] / DIMS / math.log(2):.2f}"
                     for r in run.history() if key in r)


class StepTimes(Callback):
    """Wall-clock time of each optimiser step (for fitting a step count to a time budget)."""

    def __init__(self):
        self.times = []

    def on_step_end(self, trainer) -> None:
        self.times.append(time.perf_counter())


def fitted_steps(model: str, options: dict, preprocessing: str, cfg, minutes: float) -> tuple[int, float]:
    """Steps that fill ``minutes`` of training: 40 probe steps of the same model and batch, the median
    of steps 10-40 (the first pay start-up), 5% kept back for the test-curve evaluations."""
    probe = StepTimes()
    zspace.train(model, "cifar10", preprocessing=preprocessing, progress=False, figures=False, callbacks=[probe],
                 config=dataclasses.replace(cfg, steps=40, eval_every_steps=None, eval_limit=8), **options)
    step_s = float(np.median(np.diff(probe.times[10:])))
    return max(1, int(minutes * 60 / (step_s * 1.05))), step_s


def train_job(name: str, job: dict, args) -> dict:
    cfg = zspace.TrainConfig(epochs=None, steps=job["steps"], batch_size=args.batch_size, lr=job["lr"],
                             seed=0, eval_limit=200, threads=args.threads, grad_clip=1.0,
                             precision=args.precision)
    step_s = None
    if args.budget_minutes:
        steps, step_s = fitted_steps(job["model"], job["options"], job["pre"], cfg, args.budget_minutes)
        cfg = dataclasses.replace(cfg, steps=steps)
        print(f"{name}: {step_s:.3f} s a step -> {steps} steps for {args.budget_minutes} min", flush=True)
    cfg = dataclasses.replace(cfg, eval_every_steps=max(1, cfg.steps // args.curve_points))
    start = time.perf_counter()
    run = zspace.train(job["model"], "cifar10", out=OUT / name, preprocessing=job["pre"], config=cfg,
                       progress=False, overwrite=True, **job["options"])
    train_s = time.perf_counter() - start
    return dict(describe=run.describe(), train_s=train_s, steps=cfg.steps, step_s=step_s,
                curve=curve(run, "test_elbo" if name == "vae" else "test_nll"), precision=args.precision,
                params=sum(p.numel() for p in run.model.parameters()), batch_size=args.batch_size,
                threads=args.threads, command=command_line(), budget_minutes=args.budget_minutes,
                **evaluate_job(name, run, args))


def evaluate_job(name: str, run, args) -> dict:
    """Test bits/dim of a saved run on the first ``limit`` test images, and its sample figure."""
    ev = evaluate_run(run, nll_samples=args.nll_samples, limit=args.limit, batch_size=100)
    save_samples(run, FIGS / f"cifar10-{name}-samples.png", n=36, seed=0)
    return dict(bits_per_dim=ev.likelihood.bits_per_dim, nll=ev.likelihood.nll, exact=ev.exact,
                kind=ev.meaning.kind, nll_samples=args.nll_samples, limit=args.limit, evaluated=command_line())


def train_tiles(args) -> dict:
    """A VQ-VAE with an 8x8 code grid on CIFAR-10 and the two priors over its tiles (same steps each)."""
    cfg = zspace.TrainConfig(epochs=None, steps=args.vqvae_steps, batch_size=32, lr=2e-3, seed=0, eval_limit=500,
                             threads=args.threads)
    start = time.perf_counter()
    vq = zspace.train("vqvae", "cifar10", out=OUT / "vqvae", preprocessing="scale", config=cfg, progress=False,
                      overwrite=True, architecture="resnet", channels=(32, 64), blocks=1, embedding_dim=16,
                      num_codes=args.num_codes)
    vq_s = time.perf_counter() - start
    out = dict(describe=vq.describe(), train_s=vq_s, steps=args.vqvae_steps, num_codes=args.num_codes,
               threads=args.threads, command=command_line(), **evaluate_vqvae(vq, args), priors={})
    options = {"gated-pixelcnn": dict(channels=64, residual_blocks=3),
               "tile-transformer": dict(width=64, layers=3, heads=4)}
    for kind, opts in options.items():
        cfg = zspace.TrainConfig(epochs=None, steps=args.prior_steps, batch_size=64, lr=1e-3, seed=0,
                                 eval_limit=1000, threads=args.threads)
        start = time.perf_counter()
        run = train_prior(OUT / "vqvae", OUT / f"vq-{kind}", prior_model=kind, config=cfg, progress=False,
                          overwrite=True, **opts)
        train_s = time.perf_counter() - start
        rep = evaluate_exact_likelihood(run.model, run.loader("test", 250).epoch(0))
        grid = math.prod(run.model.config.input_shape)
        save_samples(run, FIGS / f"vqvae-cifar10-{kind}-samples.png", n=36, seed=0)
        out["priors"][kind] = dict(describe=run.describe(), train_s=train_s, steps=args.prior_steps,
                                   bits_per_code=rep.nll / grid / math.log(2), grid=grid)
    return out


def evaluate_vqvae(vq, args) -> dict:
    """Reconstruction error and codebook use on the first ``limit`` test images, and the figure."""
    quality = vqvae_test_quality(vq.model, vq.loader("test", 250, limit=args.limit).epoch(0), vq.model.config.num_codes)
    save_reconstructions(vq, FIGS / "vqvae-cifar10-reconstructions.png", n=32)
    return dict(**quality, limit=args.limit, evaluated=command_line())


def evaluate_saved(name: str, args) -> dict:
    """--evaluate-only: the saved run's facts with its evaluation (and figures) made again."""
    facts = json.loads((OUT / f"{name}-facts.json").read_text())
    if name == "tiles":
        facts.update(evaluate_vqvae(zspace.load_run(OUT / "vqvae"), args))
        for kind in facts["priors"]:
            save_samples(zspace.load_run(OUT / f"vq-{kind}"), FIGS / f"vqvae-cifar10-{kind}-samples.png", n=36, seed=0)
    else:
        facts.update(evaluate_job(name, zspace.load_run(OUT / name), args))
    return facts


def job_row(f: dict) -> str:
    nll = "exact" if f["exact"] else f"IS k = {f['nll_samples']}"
    return (f"| {f['describe']} ({f['params'] / 1e3:.0f}k parameters, {f['precision']} training) | "
            f"{f['steps']} x {f['batch_size']} ({f['steps'] * f['batch_size'] / 50000:.2f} epochs), "
            f"{f['train_s'] / 60:.1f} min on {f['threads']} thread(s) | **{f['bits_per_dim']:.3f}** ({nll}, "
            f"{f['limit']} test images) | {f['curve']} |")


def markdown(facts: dict) -> str:
    commands = sorted({f["command"] for f in facts.values()})
    rows = "\n".join(job_row(facts[k]) for k in ("vae", "pixelcnn") if k in facts)
    again = sorted({f["evaluated"] for f in facts.values() if f.get("evaluated") not in (None, f["command"])})
    relisted = ("\nTest bits/dim and figures evaluated again from the saved runs by "
                + "; ".join(f"`{c}`" for c in again) + "; the curve points are those measured during training.\n"
                if again else "")
    md = f"""### CIFAR-10 in colour: bits/dim against CPU time

Command(s): {'; '.join(f'`{c}`' for c in commands)}
Machine: {machine()}; times are wall clock of the thread counts named, on a CPU shared with the other job.
Data: cifar10-jpg.zip, 50,000 training images, seed 0, Adam with cosine decay, gradient norm clipped at 1.
**Decoded from JPEG quality 75: not comparable with the literature's lossless CIFAR-10**, where PixelCNN reaches
3.14 bits/dim (van den Oord et al. 2016), gated PixelCNN 3.03 (van den Oord et al. 2016b) and PixelCNN++ 2.92
(Salimans et al. 2017) after days of GPU training; the budget here is one or two CPU hours.

| model | training | test bits/dim | test curve (wall time: bits/dim on 200 test images; VAE: the ELBO bound) |
|---|---|---|---|
{rows}

{relisted}
Figures: [VAE samples](../docs/figures/cifar10-vae-samples.png) (decoder means of z ~ N(0, I)),
[PixelCNN samples](../docs/figures/cifar10-pixelcnn-samples.png) (cached sampling, R then G then B through the
coupled mixture).
"""
    if "tiles" in facts:
        t = facts["tiles"]
        priors = "; ".join(f"{k} {v['bits_per_code']:.3f} bits per code ({v['steps']} steps, {v['train_s'] / 60:.1f} min)"
                           for k, v in t["priors"].items())
        md += f"""
VQ-VAE over 8x8 tiles (`{t['command']}`): {t['describe']}, {t['steps']} steps of batch 32 ({t['train_s'] / 60:.1f} min):
test MSE per subpixel {t['mse']:.5f} ({10 * math.log10(1 / t['mse']):.2f} dB), codebook perplexity {t['perplexity']:.1f}
({t['used']} of {t['num_codes']} codes in use). Priors over its 64 codes: {priors}.
Figures: [reconstructions](../docs/figures/vqvae-cifar10-reconstructions.png),
[gated PixelCNN prior samples](../docs/figures/vqvae-cifar10-gated-pixelcnn-samples.png),
[transformer prior samples](../docs/figures/vqvae-cifar10-tile-transformer-samples.png).
"""
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", nargs="+", choices=("vae", "pixelcnn", "tiles"), default=["vae", "pixelcnn"],
                    help="what to train now (the others' saved facts are kept in the table)")
    ap.add_argument("--budget-minutes", type=float, default=0.0,
                    help="train each of --jobs vae / pixelcnn for this many minutes (steps fitted by a probe)")
    ap.add_argument("--vae-steps", type=int, default=120)
    ap.add_argument("--vae-channels", type=lambda s: tuple(int(v) for v in s.split(",")), default=(32, 64))
    ap.add_argument("--vae-blocks", type=int, default=0)
    ap.add_argument("--pixelcnn-steps", type=int, default=90)
    ap.add_argument("--pixelcnn-channels", type=int, default=32)
    ap.add_argument("--pixelcnn-blocks", type=int, default=3)
    ap.add_argument("--mixtures", type=int, default=5)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="training precision")
    ap.add_argument("--vqvae-steps", type=int, default=3000)
    ap.add_argument("--prior-steps", type=int, default=1500)
    ap.add_argument("--num-codes", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--curve-points", type=int, default=3, help="test evaluations over the run")
    ap.add_argument("--limit", type=int, default=1000, help="test images evaluated")
    ap.add_argument("--nll-samples", type=int, default=100)
    ap.add_argument("--evaluate-only", action="store_true",
                    help="evaluate the saved runs of --jobs again (test bits/dim, figures), training nothing")
    ap.add_argument("--scorecard", type=int, default=0, metavar="N",
                    help="only the scorecard of the saved runs on N samples each (FID-CIFARNet)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ZSPACE_DATA", str(ROOT.parent / "shared" / "data" / "images"))
    FIGS.mkdir(parents=True, exist_ok=True)
    if args.scorecard:
        return score(args)
    jobs = {
        "vae": dict(model="vae", steps=args.vae_steps, lr=2e-3, pre="scale",
                    options=dict(architecture="resnet", channels=args.vae_channels, blocks=args.vae_blocks,
                                 latent_dim=64, likelihood="logistic")),
        "pixelcnn": dict(model="gated-pixelcnn", steps=args.pixelcnn_steps, lr=2e-3, pre="uint8",
                         options=dict(head="logistic-mixture", mixtures=args.mixtures, channels=args.pixelcnn_channels,
                                      residual_blocks=args.pixelcnn_blocks, head_channels=2 * args.pixelcnn_channels,
                                      first_kernel=5)),
    }
    for name in args.jobs:
        facts = (evaluate_saved(name, args) if args.evaluate_only else
                 train_tiles(args) if name == "tiles" else train_job(name, jobs[name], args))
        print(name, json.dumps(facts), flush=True)
        write_text_atomic(OUT / f"{name}-facts.json", json.dumps(facts, indent=1))
    saved = {k: json.loads((OUT / f"{k}-facts.json").read_text()) for k in ("vae", "pixelcnn", "tiles")
             if (OUT / f"{k}-facts.json").exists()}
    md = markdown(saved)
    update_section("colour-cifar10", md)   # the last job to finish writes everyone's rows
    print(md)


def score(args) -> None:
    names = [n for n in ("vae", "pixelcnn", "vq-gated-pixelcnn", "vq-tile-transformer") if (OUT / n).exists()]
    start = time.perf_counter()
    card = scorecard([OUT / n for n in names], n=args.scorecard, seed=0, nll_samples=args.nll_samples,
                     nll_limit=args.limit)
    md = (f"### CIFAR-10 scorecard on FID-CIFARNet (issue 17)\n\nCommand: `{command_line()}` "
          f"({(time.perf_counter() - start) / 60:.1f} min), on the runs of the section above "
          f"({', '.join(names)}).\nMachine: {machine()}. N = {args.scorecard} samples per model against "
          f"{args.scorecard} training images; features: {card.extractor}; the first row is real test images, "
          f"the floor at this N (FID is biased upward at small N; KID is not).\n\n{card.markdown()}\n")
    update_section("colour-cifar10-scorecard", md)
    print(md)


if __name__ == "__main__":
    main()
