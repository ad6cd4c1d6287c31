"""VQ-VAE on Fashion-MNIST and a gated PixelCNN prior over its code grids ("a sequence of
tiles", van den Oord et al. 2017).

Trains the VQ-VAE (EMA codebook, dead-code restarts), then the prior on the 7x7 grids of
codes (`zspace train prior`), and reports on the full test set:
  * reconstruction MSE per pixel (images in [0, 1]) and PSNR;
  * codebook usage: perplexity exp(H) of the test codes' frequencies and codes in use;
  * the prior's exact NLL over code grids, in bits per code, beside two baselines
    computed from the same training codes: uniform (log2 K) and a unigram (code
    frequencies, independent tiles) - the prior earns its keep by the gap to the unigram;
  * prior samples decoded to images, and reconstructions, as figures in docs/figures/.

    python benchmarks/vqvae_prior.py --threads 2
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import zspace
from _common import ROOT, command_line, machine, update_section, use_shared_data
from zspace.evaluation import evaluate_exact_likelihood, reconstruction_error
from zspace.models.vqvae import perplexity_of_counts
from zspace.prior import CODES_FILE, train_prior
from zspace.report.figures import save_reconstructions, save_samples
from zspace.rng import seeded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist", choices=("fashion-mnist", "mnist"))
    ap.add_argument("--epochs", type=int, default=10, help="VQ-VAE epochs")
    ap.add_argument("--num-codes", type=int, default=128)
    ap.add_argument("--prior-epochs", type=int, default=8)
    ap.add_argument("--prior-channels", type=int, default=32)
    ap.add_argument("--prior-blocks", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    use_shared_data()
    torch.set_num_threads(args.threads)
    out = ROOT / "runs" / f"bench-vqvae-{args.data}"
    data = zspace.load_dataset(args.data)

    t0 = time.perf_counter()
    cfg = zspace.TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, lr_schedule="cosine", seed=0,
                             eval_limit=2000, threads=args.threads)
    vq = zspace.train("vqvae", data, out=out / "vqvae", preprocessing="scale", config=cfg, progress=False,
                      overwrite=True, num_codes=args.num_codes)
    vq_minutes = (time.perf_counter() - t0) / 60

    model = vq.model
    mse = reconstruction_error(model, vq.loader("test", 500).epoch(0))

    t1 = time.perf_counter()
    pcfg = zspace.TrainConfig(epochs=args.prior_epochs, batch_size=128, lr=1e-3, lr_schedule="cosine", seed=0,
                              eval_limit=2000, threads=args.threads)
    prior = train_prior(out / "vqvae", out / "prior", config=pcfg, progress=False, overwrite=True,
                        channels=args.prior_channels, residual_blocks=args.prior_blocks)
    prior_minutes = (time.perf_counter() - t1) / 60
    rep = evaluate_exact_likelihood(prior.model, prior.loader("test", 500).epoch(0))
    grid = prior.model.config.input_shape[1] * prior.model.config.input_shape[2]
    bits_per_code = rep.nll / grid / math.log(2)

    # train_prior encoded both splits with the VQ-VAE: the test grids give its codebook usage too
    with np.load(out / "prior" / CODES_FILE) as grids:
        train_codes, test_codes = grids["x_train"].ravel(), grids["x_test"].ravel()
    counts = np.bincount(test_codes, minlength=args.num_codes)
    perplexity = float(perplexity_of_counts(torch.from_numpy(counts).double()))
    used = int((counts > 0).sum())
    freq = (np.bincount(train_codes, minlength=args.num_codes) + 1.0)     # add-one: no zero probabilities
    freq /= freq.sum()
    unigram_bits = float(-np.log2(freq[test_codes]).mean())

    with seeded(0):
        t2 = time.perf_counter()
        prior.sample(64)
        sample_seconds = time.perf_counter() - t2
    figs = ROOT / "docs" / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    save_samples(prior, figs / f"vqvae-{args.data}-prior-samples.png", n=64, seed=0)
    save_reconstructions(vq, figs / f"vqvae-{args.data}-reconstructions.png", n=32)

    md = f"""### VQ-VAE and its autoregressive prior on {args.data}

Command: `{command_line()}` (VQ-VAE {vq_minutes:.0f} min, prior {prior_minutes:.0f} min of training)
Machine: {machine()}; {args.threads} threads.
VQ-VAE: {vq.describe()}; conv encoder {'-'.join(map(str, model.config.channels))} (two stride-2 stages),
commitment β = {model.config.commitment}, EMA decay {model.config.ema_decay}, dead-code restarts; {args.epochs} epochs,
batch 128, Adam lr 1e-3 cosine, images scaled to [0, 1], seed 0.
Prior: {prior.describe()} over the {int(math.sqrt(grid))}×{int(math.sqrt(grid))} code grids (K = {args.num_codes} levels,
embedded inputs); {args.prior_epochs} epochs, batch 128, Adam lr 1e-3 cosine, seed 0.

| measure (all {rep.num_examples} test images) | value |
|---|---|
| reconstruction MSE per pixel | **{mse:.5f}** (PSNR {10 * math.log10(1 / mse):.2f} dB) |
| codebook perplexity exp(H) | **{perplexity:.1f}** of K = {args.num_codes} ({used} codes in use) |
| prior exact NLL over a code grid | {rep.nll:.2f} ± {rep.nll_std_err:.2f} nats = **{bits_per_code:.3f} bits per code** |
| baseline: uniform over K codes | {math.log2(args.num_codes):.3f} bits per code |
| baseline: unigram (training code frequencies, add-one) | {unigram_bits:.3f} bits per code |
| sampling 64 images (prior, {grid} steps, then decode) | {sample_seconds:.2f} s |

The prior's {rep.nll / math.log(2):.0f} bits per image describe the code grid only: the decoder is deterministic, so
this is not a likelihood of the images (a scorecard compares these models on samples instead).
Figures: [prior samples](../docs/figures/vqvae-{args.data}-prior-samples.png),
[reconstructions](../docs/figures/vqvae-{args.data}-reconstructions.png).
"""
    update_section(f"vqvae-{args.data}", md)
    print(md)


if __name__ == "__main__":
    main()
