#!/usr/bin/env python
"""pythae side of the zspace-vs-pythae benchmark.

Trains pythae 0.1.2's VAE (Burda et al. 2015 MLP, latent 50, Bernoulli decoder)
on dynamically binarized MNIST with pythae's own TrainingPipeline/BaseTrainer,
times every epoch, then evaluates pythae's own importance-sampled NLL
(VAE.get_nll) on a fixed-seed binarization of the test set.

Run with /tmp/pythae-venv/bin/python.
"""
import argparse
import json
import os
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--batch-size", type=int, default=100)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--activation", choices=["tanh", "relu", "elu", "softplus"], default="tanh")
p.add_argument("--nll-samples", type=int, default=1000, help="K importance samples per image")
p.add_argument("--nll-limit", type=int, default=10000, help="number of test images for NLL")
p.add_argument("--nll-batch-size", type=int, default=100,
               help="batch_size passed to get_nll (pythae default 100); samples per forward pass. "
                    "Clipped to K when K is smaller (pythae would otherwise silently use batch_size samples).")
p.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
p.add_argument("--data", default="/work/shared/data/mnist/mnist.npz")
p.add_argument("--bench-dir", default="/tmp/pythae_bench")
p.add_argument("--out", default="/tmp/pythae_bench/results.json")
p.add_argument("--progress", action="store_true", help="keep pythae's tqdm progress bars")
args = p.parse_args()

if not args.progress:
    os.environ["TQDM_DISABLE"] = "1"  # pythae always adds a ProgressBarCallback

import numpy as np
import torch
import torch.nn as nn

torch.set_num_threads(args.threads)

import pythae
from pythae.data.datasets import DatasetOutput
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.pipelines import TrainingPipeline
from pythae.trainers import BaseTrainerConfig
from pythae.trainers.training_callbacks import TrainingCallback

ACT = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus}[args.activation]
D, H, Z = 784, 200, 50


# ---------------------------------------------------------------- model ----
class BurdaEncoder(BaseEncoder):
    """784-200-200 MLP, then linear heads to mean and log-variance (50 each)."""

    def __init__(self):
        BaseEncoder.__init__(self)
        self.net = nn.Sequential(nn.Linear(D, H), ACT(), nn.Linear(H, H), ACT())
        self.mu = nn.Linear(H, Z)
        self.log_var = nn.Linear(H, Z)

    def forward(self, x):
        h = self.net(x.reshape(x.shape[0], D))
        return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))


class BurdaDecoder(BaseDecoder):
    """50-200-200-784 MLP with sigmoid output (Bernoulli means; pythae's bce expects probabilities)."""

    def __init__(self):
        BaseDecoder.__init__(self)
        self.net = nn.Sequential(nn.Linear(Z, H), ACT(), nn.Linear(H, H), ACT(),
                                 nn.Linear(H, D), nn.Sigmoid())

    def forward(self, z):
        return ModelOutput(reconstruction=self.net(z).reshape(z.shape[0], 1, 28, 28))


# ----------------------------------------------------------------- data ----
class DynamicBinarizedMNIST(torch.utils.data.Dataset):
    """pythae-compatible dataset: __getitem__ returns DatasetOutput(data=..., labels=...)
    (same format as pythae.data.datasets.BaseDataset) with a fresh Bernoulli draw
    x ~ Bernoulli(pixel/255) every time an image is served, i.e. every epoch.
    Uses torch's global RNG, which pythae's trainer seeds (set_seed(config.seed))."""

    def __init__(self, images_uint8, labels):
        self.probs = torch.from_numpy(images_uint8).float().div_(255.0).reshape(-1, 1, 28, 28)
        self.labels = torch.from_numpy(np.asarray(labels)).float()

    def __len__(self):
        return self.probs.shape[0]

    def __getitem__(self, index):
        return DatasetOutput(data=torch.bernoulli(self.probs[index]), labels=self.labels[index])


# ------------------------------------------------------------ callbacks ----
class EpochTimer(TrainingCallback):
    """Wall time between pythae's on_epoch_begin and on_epoch_end events (covers
    train_step plus pythae's per-epoch best-model deepcopy), plus the epoch loss."""

    def __init__(self):
        self.epoch_seconds, self.train_loss = [], []
        self._t0 = None

    def on_epoch_begin(self, training_config, **kw):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, training_config, **kw):
        dt = time.perf_counter() - self._t0
        self.epoch_seconds.append(dt)
        print(f"[pythae_side] epoch {len(self.epoch_seconds)} took {dt:.2f}s", flush=True)

    def on_log(self, training_config, logs, **kw):
        if "train_epoch_loss" in logs:
            self.train_loss.append(float(logs["train_epoch_loss"]))


def main():
    os.makedirs(args.bench_dir, exist_ok=True)
    out_dir = os.path.join(args.bench_dir, "out")
    notes = []

    mnist = np.load(args.data)
    x_train, y_train = mnist["x_train"], mnist["y_train"]
    x_test = mnist["x_test"]
    if args.train_limit:
        x_train, y_train = x_train[: args.train_limit], y_train[: args.train_limit]
        notes.append(f"train_limit={args.train_limit} (not the full 60000 training images)")
    train_ds = DynamicBinarizedMNIST(x_train, y_train)

    torch.manual_seed(args.seed)  # model init
    cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=Z, reconstruction_loss="bce")
    model = VAE(model_config=cfg, encoder=BurdaEncoder(), decoder=BurdaDecoder())
    n_params = sum(p.numel() for p in model.parameters())

    tcfg = BaseTrainerConfig(
        output_dir=out_dir,
        num_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.lr,
        optimizer_cls="Adam",       # pythae's default
        steps_saving=None,          # no checkpoints
        steps_predict=None,         # no prediction images
        seed=args.seed,
        no_cuda=True,
    )
    timer = EpochTimer()
    pipeline = TrainingPipeline(model=model, training_config=tcfg)

    t0 = time.perf_counter()
    pipeline(train_data=train_ds, eval_data=None, callbacks=[timer])
    train_seconds = time.perf_counter() - t0
    trainer = pipeline.trainer
    notes.append("trained via pythae TrainingPipeline -> BaseTrainer, Adam, no eval set "
                 "(pythae then keeps best model on train loss and deepcopies it each improving epoch); "
                 "train_seconds = wall time of the whole pipeline call (dataset checks, sanity forward, "
                 "all epochs, final model save); epoch_seconds = on_epoch_begin..on_epoch_end")

    # pythae's returned/saved model is the best-on-train one; with dynamic binarization
    # this is normally the last epoch. Evaluate that one (what pythae saves as final_model).
    best = getattr(trainer, "_best_model", trainer.model)
    best_epoch = int(np.argmin(timer.train_loss)) + 1 if timer.train_loss else None
    eval_model = best
    eval_model.eval()

    # ------------------------------------------------ fixed test binarization
    g = torch.Generator().manual_seed(args.seed)
    test_probs = torch.from_numpy(x_test).float().div_(255.0)
    test_bin_full = torch.bernoulli(test_probs, generator=g).to(torch.uint8)  # all 10000, then slice
    n_nll = min(args.nll_limit, test_bin_full.shape[0])
    test_bin = test_bin_full[:n_nll]
    test_path = os.path.join(args.bench_dir, f"test_bin_seed{args.seed}.npy")
    np.save(test_path, test_bin.numpy())
    notes.append(f"test set binarized once: torch.bernoulli(x_test/255, generator=torch.Generator()"
                 f".manual_seed({args.seed})) over all 10000 images, first {n_nll} saved to {test_path}")

    # ------------------------------------------------------------- NLL ------
    K = args.nll_samples
    bs = min(args.nll_batch_size, K)
    k_eff = bs if K <= bs else (K // bs) * bs
    if k_eff != K:
        notes.append(f"WARNING: get_nll uses (K//batch_size)*batch_size = {k_eff} samples, not {K}")
    data = test_bin.float().reshape(n_nll, 1, 28, 28)
    torch.manual_seed(args.seed + 12345)
    t0 = time.perf_counter()
    with torch.no_grad():
        mean_log_px = eval_model.get_nll(data, n_samples=K, batch_size=bs)
    nll_seconds = time.perf_counter() - t0
    nll = -float(mean_log_px)
    notes.append(f"NLL = -VAE.get_nll(data, n_samples={K}, batch_size={bs}); get_nll returns the mean over "
                 "images of the IWAE estimate log(1/K sum_k p(x|z_k)p(z_k)/q(z_k|x)), z_k ~ q(z|x) "
                 "(encoder posterior), i.e. a log-likelihood in nats/image (negative); "
                 "loops one image at a time in Python; called under torch.no_grad() (pythae itself does not)")

    res = {
        "pythae_version": getattr(pythae, "__version__", None) or _dist_version("pythae"),
        "torch_version": torch.__version__,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "train_images": len(train_ds),
        "n_params": n_params,
        "epoch_seconds": timer.epoch_seconds,
        "train_seconds": train_seconds,
        "train_epoch_loss": timer.train_loss,
        "evaluated_model_epoch": best_epoch,
        "nll_nats": nll,
        "nll_samples": k_eff,
        "nll_batch_size": bs,
        "nll_images": n_nll,
        "nll_seconds": nll_seconds,
        "binarization": "dynamic",
        "threads": args.threads,
        "activation": args.activation,
        "notes": " | ".join(notes),
    }
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


def _dist_version(name):
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    main()
