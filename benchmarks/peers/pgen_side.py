#!/usr/bin/env python
"""pytorch-generative side of the PixelCNN race (benchmarks/race_pixelcnn.py).

Trains pytorch-generative's PixelCNN with the settings of its own ``reproduce()`` for MNIST
(15 causal residual blocks, residual_channels 16, head 32; Adam lr 1e-3 with its
MultiplicativeLR 0.999977 per step; batch 256; summed binary cross-entropy), through its own
``Trainer._train_one_batch`` and ``_eval_one_batch``: the peer's code runs unmodified from
../shared/peers/pytorch-generative. Only what it imports but this benchmark does not use
(torchvision for its data set downloads, tensorboard for its logs) is stubbed.

Training wall time is counted by this script; every --curve-every minutes of it the clock
stops and the NLL (nats) on the curve images is written as one JSON line to --out.
Run with a venv of its own: torch==2.13.0, numpy, scikit-learn, pillow.
"""
import argparse
import json
import sys
import time
import types
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--data", required=True, help=".npz with static-binarized train, curve and test (uint8 0/1)")
p.add_argument("--out", required=True, help="JSON-lines file for the curve and the final result")
p.add_argument("--budget-minutes", type=float, required=True)
p.add_argument("--curve-every", type=float, default=6.0, help="minutes of training between curve points")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--peer", default=str(Path(__file__).resolve().parents[3] / "shared/peers/pytorch-generative"))
args = p.parse_args()


def stub(name, **attrs):
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


class _Writer:          # tensorboard.SummaryWriter: the logs are not used here
    def __init__(self, *a, **k): ...
    def __getattr__(self, name): return lambda *a, **k: None


tv = stub("torchvision")
tv.datasets = stub("torchvision.datasets", MNIST=object, CIFAR10=object)
tv.datasets.utils = stub("torchvision.datasets.utils")
tv.datasets.vision = stub("torchvision.datasets.vision", VisionDataset=object)
tv.transforms = stub("torchvision.transforms")
import torch  # noqa: E402
import torch.utils  # noqa: E402
tb = stub("torch.utils.tensorboard", SummaryWriter=_Writer)
torch.utils.tensorboard = tb

sys.path.insert(0, args.peer)
import numpy as np  # noqa: E402
from torch import optim  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.optim import lr_scheduler  # noqa: E402
from pytorch_generative import models, trainer  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
arrays = np.load(args.data)
train = torch.from_numpy(arrays["train"]).float().view(-1, 1, 28, 28)
curve = torch.from_numpy(arrays["curve"]).float().view(-1, 1, 28, 28)
test = torch.from_numpy(arrays["test"]).float().view(-1, 1, 28, 28)

# --- pytorch_generative.models.autoregressive.pixel_cnn.reproduce(), as written there ---
model = models.PixelCNN(in_channels=1, out_channels=1, n_residual=15, residual_channels=16, head_channels=32)
optimizer = optim.Adam(model.parameters(), lr=1e-3)
scheduler = lr_scheduler.MultiplicativeLR(optimizer, lr_lambda=lambda _: 0.999977)


def loss_fn(x, _, preds):
    batch_size = x.shape[0]
    x, preds = x.view((batch_size, -1)), preds.view((batch_size, -1))
    loss = F.binary_cross_entropy_with_logits(preds, x, reduction="none")
    return loss.sum(dim=1).mean()


batch_size = 256
run = trainer.Trainer(model=model, loss_fn=loss_fn, optimizer=optimizer, train_loader=None,
                      eval_loader=None, lr_scheduler=scheduler, n_gpus=0)
# --- end of the peer's set-up ---


def nll(x: torch.Tensor) -> float:
    total = 0.0
    for i in range(0, len(x), 250):
        b = x[i:i + 250]
        total += run._eval_one_batch(b, None)["loss"] * len(b)
    return total / len(x)


out = open(args.out, "w")


def record(**row):
    out.write(json.dumps(row) + "\n")
    out.flush()
    print("pytorch-generative", row, flush=True)


params = sum(p.numel() for p in model.parameters())
record(kind="setup", params=params, batch_size=batch_size, threads=args.threads)
g = torch.Generator().manual_seed(args.seed)
budget, every = args.budget_minutes * 60, args.curve_every * 60
clock, next_point, steps, epoch = 0.0, every, 0, 0
done = False
while not done:
    order = torch.randperm(len(train), generator=g)
    for i in range(0, len(train), batch_size):
        t0 = time.perf_counter()
        run._train_one_batch(train[order[i:i + batch_size]], None)
        clock += time.perf_counter() - t0
        steps += 1
        if clock >= next_point or clock >= budget:
            record(kind="curve", train_minutes=round(clock / 60, 2), step=steps, epoch=round(epoch + i / len(train), 3),
                   nll=round(nll(curve), 3))
            next_point += every
        if clock >= budget:
            done = True
            break
    epoch += 1
t0 = time.perf_counter()
record(kind="final", train_minutes=round(clock / 60, 2), step=steps, nll=round(nll(test), 3), n=len(test),
       eval_seconds=round(time.perf_counter() - t0, 1))
