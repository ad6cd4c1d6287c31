#!/usr/bin/env python
"""pythae side of benchmarks/likelihood_estimator.py: pythae 0.1.2's own importance-sampled
NLL (VAE.get_nll) on zspace's trained 784-200-200-50 MLP VAE, its weights copied into
pythae's VAE (encoder mean/log-variance heads split from zspace's one output layer; the
decoder ends in a sigmoid, as pythae's "bce" loss expects probabilities).

Run with the pythae venv's python (/tmp/peer-pythae/bin/python).
"""
import argparse
import json
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
import torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("--weights", required=True, help=".npz of zspace's state dict (encoder.1.weight, ...)")
p.add_argument("--images", required=True, help=".npy (N, 28, 28) binarized test images")
p.add_argument("--samples", type=int, default=5000)
p.add_argument("--batch-size", type=int, default=100, help="get_nll's samples per forward pass (its default)")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--out", required=True)
args = p.parse_args()
torch.set_num_threads(args.threads)

from pythae.models import VAE, VAEConfig                      # noqa: E402
from pythae.models.base.base_utils import ModelOutput         # noqa: E402
from pythae.models.nn import BaseDecoder, BaseEncoder         # noqa: E402

W = {k: torch.from_numpy(v) for k, v in np.load(args.weights).items()}
Z = W["decoder.1.weight"].shape[1]


def linear(name, rows=slice(None)):
    w, b = W[f"{name}.weight"][rows], W[f"{name}.bias"][rows]
    layer = nn.Linear(w.shape[1], w.shape[0])
    layer.weight.data.copy_(w)
    layer.bias.data.copy_(b)
    return layer


class Encoder(BaseEncoder):
    def __init__(self):
        BaseEncoder.__init__(self)
        self.net = nn.Sequential(linear("encoder.1"), nn.ELU(), linear("encoder.3"), nn.ELU())
        self.mu, self.log_var = linear("encoder.5", slice(0, Z)), linear("encoder.5", slice(Z, 2 * Z))

    def forward(self, x):
        h = self.net(x.reshape(x.shape[0], -1))
        return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))


class Decoder(BaseDecoder):
    def __init__(self):
        BaseDecoder.__init__(self)
        self.net = nn.Sequential(linear("decoder.1"), nn.ELU(), linear("decoder.3"), nn.ELU(),
                                 linear("decoder.5"), nn.Sigmoid())

    def forward(self, z):
        return ModelOutput(reconstruction=self.net(z).reshape(z.shape[0], 1, 28, 28))


model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=Z, reconstruction_loss="bce"),
            encoder=Encoder(), decoder=Decoder()).eval()
x = torch.from_numpy(np.load(args.images)).float().reshape(-1, 1, 28, 28)
torch.manual_seed(args.seed)
t0 = time.perf_counter()
with torch.no_grad():
    mean_log_px = model.get_nll(x, n_samples=args.samples, batch_size=min(args.batch_size, args.samples))
seconds = time.perf_counter() - t0
from importlib.metadata import version    # noqa: E402
json.dump({"pythae_version": version("pythae"), "nll_nats": -float(mean_log_px), "seconds": seconds,
           "images": len(x), "samples": args.samples, "threads": args.threads}, open(args.out, "w"))
print(f"[pythae] get_nll k={args.samples} on {len(x)} images: {seconds:.1f} s, NLL {-float(mean_log_px):.2f}")
