"""Feature extractors for sample-quality metrics.

Inception weights cannot be downloaded here, and Inception features are the wrong lens
for digits and clothing anyway. zspace ships a small classifier per data set, trained
deterministically with zspace's own code and stored in the package as safetensors:

    python -m zspace.evaluation.features --data mnist            # LeNet: 2 conv layers, 64-d features
    python -m zspace.evaluation.features --data fashion-mnist
    python -m zspace.evaluation.features --data cifar10 --epochs 8   # CIFARNet: 3 conv blocks, 128-d features

Metrics computed on their features are named after them ("FID-LeNet", "FID-CIFARNet", ...)
so nobody compares them with Inception numbers; CIFARNet reads the JPEG-decoded CIFAR-10
of ../shared (its test accuracy is in the weights' metadata). Any ``nn.Module`` mapping
(N, C, H, W) images in [0, 1] to (N, d) features (and, for the IS analogue, a module
returning logits) can be used instead.
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
SHIPPED = ("mnist", "fashion-mnist", "cifar10")


class _FeatureClassifier(nn.Module):
    """A shipped extractor: ``body`` maps images to features, ``head`` features to class logits."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class LeNet(_FeatureClassifier):
    """(N, 1, 28, 28) in [0, 1] -> 64-d features -> 10 logits."""

    feature_dim = 64

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),        # 26 -> 13
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),       # 11 -> 5
            nn.Flatten(), nn.Linear(64 * 5 * 5, self.feature_dim), nn.ReLU())
        self.head = nn.Linear(self.feature_dim, num_classes)


class CIFARNet(_FeatureClassifier):
    """(N, 3, 32, 32) in [0, 1] -> 128-d features -> 10 logits: three conv-BN-ReLU-pool blocks
    (32, 64, 128 channels; 32 -> 16 -> 8 -> 4) and a 128-d feature layer, ~10M multiply-adds an
    image, so that it trains in minutes on two CPU cores."""

    feature_dim = 128

    def __init__(self, num_classes: int = 10):
        super().__init__()
        blocks = []
        for c_in, c_out in ((3, 32), (32, 64), (64, 128)):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.MaxPool2d(2)]
        self.body = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(128 * 4 * 4, self.feature_dim), nn.ReLU())
        self.head = nn.Linear(self.feature_dim, num_classes)


NETS = {"mnist": (LeNet, "lenet", (1, 28, 28)), "fashion-mnist": (LeNet, "lenet", (1, 28, 28)),
        "cifar10": (CIFARNet, "cifarnet", (3, 32, 32))}


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
        return isinstance(self.module, _FeatureClassifier)

    @torch.no_grad()
    def probs(self, images, batch_size: int = 1000) -> np.ndarray:
        if not self.has_classifier:
            raise ConfigError(f"extractor {self.name} has no classifier head for the Inception-Score analogue")
        return self._apply(images, lambda x: torch.softmax(self.module(x), 1), batch_size)

    def _feature_fn(self):
        return self.module.features if isinstance(self.module, _FeatureClassifier) else self.module

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
        want = ("x".join(map(str, shape[1:])) + (" grey" if shape[0] == 1 else f" {shape[0]}-channel")
                if shape else "(N, C, H, W)")
        raise DataError(f"the extractor takes {want} images, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    x = x.float()
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DataError("float images must lie in [0, 1]")
    return x


def load_extractor(data: str | nn.Module, name: str | None = None) -> Extractor:
    """The shipped extractor of a data set ('mnist', 'fashion-mnist': LeNet; 'cifar10': CIFARNet),
    or your own module."""
    if isinstance(data, nn.Module):
        return Extractor(name or type(data).__name__, data)
    if data not in SHIPPED:
        raise ConfigError(f"no shipped extractor for {data!r}; choose {', '.join(SHIPPED)} or pass an nn.Module")
    from ..training.checkpoint import load_weights

    cls, stem, shape = NETS[data]
    path = WEIGHTS_DIR / f"{stem}-{data}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; rebuild it with python -m zspace.evaluation.features --data {data}")
    net = cls()
    load_weights(net, path)
    return Extractor(f"{cls.__name__}-{data}", net.eval(), shape)


def train_extractor(data: str, epochs: int = 3, seed: int = 0, threads: int = 2) -> tuple[nn.Module, float]:
    """Trains the shipped extractor of ``data`` deterministically; returns it and its test accuracy.
    Colour images are flipped left-right at random (seeded) while training."""
    from ..data import load_dataset
    from ..rng import seeded

    cls, _, shape = NETS[data]
    torch.set_num_threads(threads)
    splits = load_dataset(data)
    x, y = as_unit_images(splits.train.x, shape), torch.from_numpy(np.asarray(splits.train.y)).long()
    with seeded(seed):
        net = cls()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(seed)
        net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=g).split(128):
                xb = x[idx]
                if shape[0] == 3:
                    flip = torch.rand(len(idx), generator=g) < 0.5
                    xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
                loss = nn.functional.cross_entropy(net(xb), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval()
    with torch.no_grad():
        xt = as_unit_images(splits.test.x, shape)
        pred = torch.cat([net(xt[i:i + 1000]).argmax(1) for i in range(0, len(xt), 1000)]).numpy()
        acc = float((pred == np.asarray(splits.test.y)).mean())
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
    net, acc = train_extractor(a.data, a.epochs, a.seed, a.threads)
    WEIGHTS_DIR.mkdir(exist_ok=True)
    cls, stem, _ = NETS[a.data]
    path = WEIGHTS_DIR / f"{stem}-{a.data}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"data": a.data, "epochs": str(a.epochs), "seed": str(a.seed),
                        "test_accuracy": f"{acc:.4f}"})
    print(f"{cls.__name__}-{a.data}: test accuracy {acc:.4f}, {time.perf_counter() - start:.0f} s -> {path}")


if __name__ == "__main__":
    main()
