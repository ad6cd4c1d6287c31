"""Feature extractors for sample-quality metrics on 28x28 images.

Inception weights cannot be downloaded here, and Inception features are the wrong lens
for digits and clothing anyway. zspace ships a small classifier per data set
("LeNet": two conv layers and a 64-d feature layer), trained deterministically with
zspace's own code by

    python -m zspace.evaluation.features --data mnist
    python -m zspace.evaluation.features --data fashion-mnist

and stored in the package as safetensors. Metrics computed on its features are named
after it ("FID-LeNet", "KID-LeNet", "IS-LeNet") so nobody compares them with Inception
numbers. Any ``nn.Module`` mapping (N, 1, 28, 28) images in [0, 1] to (N, d) features
(and, for the IS analogue, a module returning logits) can be used instead.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, DataError

WEIGHTS_DIR = Path(__file__).with_name("extractors")
SHIPPED = ("mnist", "fashion-mnist")


class LeNet(nn.Module):
    """(N, 1, 28, 28) in [0, 1] -> 64-d features -> 10 logits."""

    feature_dim = 64

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),        # 26 -> 13
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),       # 11 -> 5
            nn.Flatten(), nn.Linear(64 * 5 * 5, self.feature_dim), nn.ReLU())
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class Extractor:
    """A named feature extractor: ``features`` (N, d) and, if it classifies, ``probs``."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...] | None = None    # (C, H, W) it needs; None: any

    @torch.no_grad()
    def features(self, images, batch_size: int = 1000) -> np.ndarray:
        return self._apply(images, self._feature_fn(), batch_size)

    @property
    def has_classifier(self) -> bool:
        return isinstance(self.module, LeNet)

    @torch.no_grad()
    def probs(self, images, batch_size: int = 1000) -> np.ndarray:
        if not self.has_classifier:
            raise ConfigError(f"extractor {self.name} has no classifier head for the Inception-Score analogue")
        return self._apply(images, lambda x: torch.softmax(self.module(x), 1), batch_size)

    def _feature_fn(self):
        return self.module.features if isinstance(self.module, LeNet) else self.module

    def _apply(self, images, fn, batch_size: int) -> np.ndarray:
        x = as_unit_images(images, self.input_shape)
        self.module.eval()
        device = next(self.module.parameters(), torch.zeros(0)).device    # CPU images go to the module's device
        out = [fn(x[i:i + batch_size].to(device)).double().cpu().numpy() for i in range(0, len(x), batch_size)]
        feats = np.concatenate(out)
        if feats.ndim != 2:
            raise ConfigError(f"extractor {self.name} returned shape {feats.shape}; it must return (N, d)")
        return feats


def as_unit_images(images, shape: tuple[int, ...] | None = (1, 28, 28)) -> torch.Tensor:
    """uint8 or [0, 1] images (N, H, W) or (N, C, H, W) -> float (N, C, H, W) in [0, 1],
    checked against ``shape`` (C, H, W) when given."""
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or (shape is not None and tuple(x.shape[1:]) != tuple(shape)):
        want = "x".join(map(str, shape[1:])) + " grey" if shape else "(N, C, H, W)"
        raise DataError(f"the extractor takes {want} images, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    x = x.float()
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DataError("float images must lie in [0, 1]")
    return x


def load_extractor(data: str | nn.Module, name: str | None = None) -> Extractor:
    """The shipped LeNet of a data set ('mnist', 'fashion-mnist'), or your own module."""
    if isinstance(data, nn.Module):
        return Extractor(name or type(data).__name__, data)
    if data not in SHIPPED:
        raise ConfigError(f"no shipped extractor for {data!r}; choose {' or '.join(SHIPPED)} or pass an nn.Module")
    from ..training.checkpoint import load_weights

    path = WEIGHTS_DIR / f"lenet-{data}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; rebuild it with python -m zspace.evaluation.features --data {data}")
    net = LeNet()
    load_weights(net, path)
    return Extractor(f"LeNet-{data}", net.eval(), (1, 28, 28))


def train_lenet(data: str, epochs: int = 3, seed: int = 0, threads: int = 2) -> tuple[LeNet, float]:
    """Trains the shipped extractor deterministically; returns it and its test accuracy."""
    from ..data import load_dataset
    from ..rng import seeded

    torch.set_num_threads(threads)
    splits = load_dataset(data)
    x, y = as_unit_images(splits.train.x), torch.from_numpy(splits.train.y)
    with seeded(seed):
        net = LeNet()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=g).split(128):
                loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval()
    with torch.no_grad():
        xt = as_unit_images(splits.test.x)
        acc = float((net(xt).argmax(1).numpy() == splits.test.y).mean())
    return net, acc


def main(argv=None) -> None:
    from safetensors.torch import save_file

    ap = argparse.ArgumentParser(description="Train and store a shipped feature extractor.")
    ap.add_argument("--data", required=True, choices=SHIPPED)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    start = time.perf_counter()
    net, acc = train_lenet(a.data, a.epochs, a.seed, a.threads)
    WEIGHTS_DIR.mkdir(exist_ok=True)
    path = WEIGHTS_DIR / f"lenet-{a.data}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"data": a.data, "epochs": str(a.epochs), "seed": str(a.seed),
                        "test_accuracy": f"{acc:.4f}"})
    print(f"LeNet-{a.data}: test accuracy {acc:.4f}, {time.perf_counter() - start:.0f} s -> {path}")


if __name__ == "__main__":
    main()
