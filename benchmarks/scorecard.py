"""The scorecard (zspace.scorecard) for a set of trained runs of one data set, written
to RESULTS.md with the command.

    python benchmarks/scorecard.py runs/bench-ae-fashion-mnist/runs/conv runs/bench-latent-fashion-mnist/vae \
        runs/bench-latent-fashion-mnist/beta-vae runs/bench-latent-fashion-mnist/cvae \
        runs/bench-latent-fashion-mnist/vae-2d runs/bench-pixelcnn-fashion-mnist-cpu \
        runs/bench-vqvae-fashion-mnist/prior -n 10000

The runs come from benchmarks/autoencoders.py (AE), latent_space.py (VAE, CVAE, VAE z = 2),
pixelcnn_likelihood.py (PixelCNN) and vqvae_prior.py (VQ-VAE + prior); the β-VAE from the shell:
    zspace train vae --data fashion-mnist --preprocess scale --latent-dim 16 --hidden 512,256 \
        --activation elu --beta 4 --epochs 20 --batch-size 128 --lr 1e-3 --lr-schedule cosine \
        --eval-limit 2000 --seed 0 --out runs/bench-latent-fashion-mnist/beta-vae
(the same as latent_space.py's VAE but for β). For MNIST, latent_space.py's VAEs saw dynamically binarized
digits, so the β-VAE does too: --data mnist --preprocess dynamic-binarize, out runs/bench-latent-mnist/beta-vae.
"""
from __future__ import annotations

import argparse
import time

import torch

from _common import command_line, machine, update_section, use_shared_data
from zspace.scorecard import scorecard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None, help="section name (default: the data set)")
    args = ap.parse_args()
    use_shared_data()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    card = scorecard(args.runs, n=args.n)
    md = f"""### Scorecard: {card.data}

Command: `{command_line()}` ({(time.perf_counter() - start) / 60:.0f} min)
Machine: {machine()}; {args.threads} threads.
Runs: {', '.join(f'`{r}`' for r in args.runs)} (trained by the commands in their sections above;
a β-VAE by the `zspace train vae ... --beta 4` command in benchmarks/scorecard.py's docstring).
Estimators: FID/KID/IS on {card.extractor}; precision/recall with k = 3, coverage with k = 5, against
{card.n} random training images; smoothness = worst step / mean step in feature space along 16-step
interpolations between pairs of test inputs (same-class pairs for conditional models); NLL on the first
1000 test images (importance-sampled bound, k = 100, for VAEs).

{card.markdown()}"""
    update_section(f"scorecard-{args.name or card.data}", md)
    print(md)


if __name__ == "__main__":
    main()
