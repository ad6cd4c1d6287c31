"""Image loading: zspace's image-folder source against a plain PIL + torch DataLoader.

For the CIFAR-10 zip (32x32, as stored) and the CelebA zip (148-pixel central crop, then
64x64): images per second through ``zspace.data.BatchLoader`` with 1 and 2 worker
processes, beside the obvious hand-written loader (a torch Dataset whose __getitem__
reads one zip member, decodes it with PIL, crops, resizes and makes a tensor; torch's
DataLoader with the same batch size and workers), measured in the same run, in
alternation, each after a warm-up batch. Then the share of a conv-VAE training epoch spent
waiting for the next batch (CelebA 64x64, 2 workers, the trainer's loop timed around the
loader).

    python benchmarks/data_images.py --threads 2
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
import zipfile

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from _common import SHARED_DATA, command_line, machine, update_section  # noqa: E402

import zspace  # noqa: E402
from zspace.data import BatchLoader, Preprocessing  # noqa: E402


class PlainZipImages(torch.utils.data.Dataset):
    """The obvious way: one zip member per item, PIL decode, crop, resize, to a tensor."""

    def __init__(self, path, prefix, crop=None, size=None):
        self.path, self.crop, self.size = path, crop, size
        with zipfile.ZipFile(path) as z:
            self.names = sorted(n for n in z.namelist() if n.startswith(prefix) and n.endswith(".jpg"))
        self.zip = None

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        if self.zip is None:            # each worker opens its own handle
            self.zip = zipfile.ZipFile(self.path)
        img = Image.open(io.BytesIO(self.zip.read(self.names[i]))).convert("RGB")
        if self.crop:
            w, h = img.size
            left, top = (w - self.crop) // 2, (h - self.crop) // 2
            img = img.crop((left, top, left + self.crop, top + self.crop))
        if self.size:
            img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255)  # like ToTensor


def rate(batches, n_batches: int, batch_size: int) -> float:
    it = iter(batches)
    next(it)                             # warm-up: workers started, first files open
    t0 = time.perf_counter()
    seen = 0
    for _ in range(n_batches):
        b = next(it)
        seen += len(b.x if hasattr(b, "x") else b)
    return seen / (time.perf_counter() - t0)


def loading_rates(name, data, zip_path, prefix, crop, size, batch_size, n_batches, repeats):
    rows = []
    for workers in (1, 2):
        ours, plain = [], []
        for _ in range(repeats):
            loader = BatchLoader(data, batch_size, Preprocessing("scale"), seed=0, workers=workers)
            ours.append(rate(loader.epoch(0), n_batches, batch_size))
            ds = PlainZipImages(zip_path, prefix, crop, size)
            dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                             generator=torch.Generator().manual_seed(0))
            plain.append(rate(dl, n_batches, batch_size))
        o, p = float(np.median(ours)), float(np.median(plain))
        rows.append((name, workers, o, p, o / p))
        print(f"{name}, {workers} worker(s): zspace {o:.0f} img/s, plain PIL + DataLoader {p:.0f} img/s, "
              f"ratio {o / p:.2f}", flush=True)
    return rows


def wait_share(data, steps: int, batch_size: int, workers: int, threads: int):
    """Time blocked on the loader over ``steps`` conv-VAE training steps."""
    torch.manual_seed(0)
    model = zspace.models.build_model("vae", {"input_shape": data.example_shape, "architecture": "conv",
                                              "channels": (32, 64, 128), "latent_dim": 64,
                                              "likelihood": "gaussian-fixed", "variance": 0.01})
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loader = BatchLoader(data, batch_size, Preprocessing("scale"), seed=0, workers=workers)
    it = loader.epoch(0)
    next(it)
    waited = computed = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        b = next(it)
        t1 = time.perf_counter()
        out = model.loss(b.x, b.y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        t2 = time.perf_counter()
        waited += t1 - t0
        computed += t2 - t1
    return waited / (waited + computed), (waited + computed) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--vae-steps", type=int, default=60)
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    images = SHARED_DATA / "images"
    cifar_zip, celeba_zip = images / "cifar10-jpg.zip", images / "celeba-10k.zip"
    cifar = zspace.data.ImageFolder(cifar_zip, "cifar10/train")
    celeba = zspace.data.ImageFolder(celeba_zip, "celeba-10k/img_align_celeba", image_size=64, crop=148)
    rows = loading_rates("CIFAR-10 zip, 32x32", cifar, cifar_zip, "cifar10/train", None, None,
                         a.batch_size, a.batches * 4, a.repeats)
    rows += loading_rates("CelebA zip, crop 148 -> 64x64", celeba, celeba_zip, "celeba-10k/img_align_celeba",
                          148, 64, a.batch_size, a.batches, a.repeats)
    share, step = wait_share(celeba, a.vae_steps, 64, 2, a.threads)
    print(f"conv VAE on CelebA 64x64, 2 workers: {100 * share:.1f}% of the time waiting for data "
          f"({1000 * step:.0f} ms per step of 64)")
    if a.no_write:
        return
    table = "\n".join(f"| {n} | {w} | {o:.0f} | {pl:.0f} | **{r:.2f}** |" for n, w, o, pl, r in rows)
    update_section("data-images", f"""
### Image loading: zspace's image-folder source vs a plain PIL + torch DataLoader

Command: `{command_line()}`
Machine: {machine()}; {a.threads} torch thread(s) in the main process; the loader's workers are
processes with 1 thread each, so on these 2 cores 2 workers share them with the main process.
Batch {a.batch_size}, shuffled, {a.batches * 4} (CIFAR-10) or {a.batches} (CelebA) timed batches after a
warm-up batch, median of {a.repeats} alternating repeats. Both read the same zip straight from
disk (no unpacking) and return float32 (B, 3, H, W) in [0, 1] (the plain loader converts each
image like torchvision's ToTensor, zspace's `scale` preprocessing converts the batch). zspace decodes JPEGs in Pillow's draft mode
when the output is smaller than the source (CelebA: decoded at half scale, then crop 74 and resize
to 64), which the plain loader does not; for 32x32 CIFAR-10 there is nothing to reduce.

| data | workers | zspace img/s | plain img/s | ratio (target ≥ 1) |
|---|---|---|---|---|
{table}

A conv VAE (channels 32-64-128, z = 64, Gaussian decoder) training on CelebA 64x64 with 2 loader
workers spent **{100 * share:.1f}%** of its time waiting for the next batch ({1000 * step:.0f} ms per
step of 64 images, {a.vae_steps} steps, timed around `next()` of the loader).
""")


if __name__ == "__main__":
    main()
