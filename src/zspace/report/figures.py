"""PNG figures of a run: reconstructions beside inputs, prior samples, loss curves.

Every figure's title says which data, which model and how many examples it shows.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..core.io import write_atomic  # noqa: E402
from ..errors import ConfigError  # noqa: E402
from ..evaluation.glossary import unit_of  # noqa: E402
from ..rng import seeded  # noqa: E402


def save_figure(fig, path: Path, **savefig) -> Path:
    """Writes a matplotlib figure atomically (format from the suffix) and closes it."""
    path = Path(path)
    try:
        write_atomic(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".").lower() or "png", **savefig))
    finally:
        plt.close(fig)
    return path


def image_grid(images, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) values in [0, 1] -> one (rows*H, cols*W[, C]) image."""
    x = images.detach().cpu().float().numpy() if torch.is_tensor(images) else np.asarray(images, float)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ConfigError(f"image grid needs (N, 1|3, H, W) images, got shape {x.shape}")
    n, c, h, w = x.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c))
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h,
             pad + col * (w + pad):pad + col * (w + pad) + w] = x[i].transpose(1, 2, 0)
    grid = np.clip(grid, 0, 1)
    return grid[..., 0] if c == 1 else grid


def save_image_grid(images, path: str | Path, title: str = "", ncols: int | None = None) -> Path:
    import textwrap

    grid = image_grid(images, ncols)
    path = Path(path)
    h, w = grid.shape[:2]
    width = max(5.0, w / 45)                      # inches; about 45 grid pixels per inch
    lines = [ln for part in title.splitlines() for ln in textwrap.wrap(part, int(width * 13)) or [""]]
    title_h = 0.18 * len(lines) + (0.1 if lines else 0)
    height = width * h / w + title_h
    fig = plt.figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1 - title_h / height])
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if lines:
        fig.text(0.5, 1 - 0.05 / height, "\n".join(lines), ha="center", va="top", fontsize=8)
    save_figure(fig, path)
    return path


def save_labelled_rows(rows: list[tuple[str, torch.Tensor]], path: Path, title: str) -> Path:
    """One labelled row of images per entry; rows: (label, (N, C, H, W) in [0, 1])."""
    n = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.0 * n + 1.2, 1.0 * len(rows) + 0.5), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                img = images[c].detach().cpu().float().numpy().transpose(1, 2, 0)
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    return _save_titled(fig, path, title, fontsize=9)


def _save_titled(fig, path: Path, title: str, fontsize: int) -> Path:
    import textwrap

    width = int(fig.get_figwidth() * 120 / fontsize)        # characters per line that fit
    lines = [ln for part in title.splitlines() for ln in textwrap.wrap(part, width) or [""]]
    fig.suptitle("\n".join(lines), fontsize=fontsize)
    fig.tight_layout()
    save_figure(fig, Path(path), dpi=100)
    return path


def as_images(x: torch.Tensor, input_shape) -> torch.Tensor | None:
    """Model-space examples as (N, C, H, W) images in [0, 1], or None for non-image data."""
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        if len(input_shape) == 1 and int(math.isqrt(input_shape[0])) ** 2 == input_shape[0]:
            side = math.isqrt(input_shape[0])
            return x.reshape(-1, 1, side, side).float().clamp(0, 1)
        return None
    if not x.is_floating_point():        # 8-bit levels (PixelCNN samples, uint8 inputs)
        return (x.float() / 255.0).clamp(0, 1)
    x = x.float()
    # values in [0, 1] may overshoot 1 by a rounding error (a logistic decoder's mean gave
    # 1.0000001, and dividing by 255 made every sample black): only clearly larger values are levels
    return (x / 255.0 if x.max() > 1.5 else x).clamp(0, 1)


def save_reconstructions(run, path: Path, n: int = 16, split: str = "test", required: bool = False) -> Path | None:
    """Inputs beside their reconstructions; None for a model that does not reconstruct
    (autoregressive models have no code to decode) unless ``required`` (then ConfigError)."""
    from ..models.capabilities import Reconstructs
    from ..tasks import reconstruct_run

    if not (required or isinstance(run.model, Reconstructs)):
        return None
    rec = reconstruct_run(run, n, split)
    shape = run.model.config.input_shape
    originals, recs = as_images(rec.grey, shape), as_images(rec.outputs, shape)
    if originals is None:
        return None
    pairs = torch.stack([originals, recs], 1).reshape(-1, *originals.shape[1:])
    binarized = rec.grey is not rec.inputs
    levels = "colour" if originals.shape[1] == 3 else "grey levels"
    title = (f"{run.describe()}\n{split} inputs (left, {levels}"
             + ("; the model saw a binarized draw" if binarized else "")
             + f") and reconstructions (right, decoder mean), first {len(rec.inputs)} examples")
    return save_image_grid(pairs, path, title, ncols=8)


def save_samples(run, path: Path, n: int = 64, seed: int = 0) -> Path | None:
    from ..models.capabilities import ContinuousCode, SamplesFromPrior

    if not isinstance(run.model, SamplesFromPrior):
        return None
    classes = run.model.num_classes
    per_class = max(1, n // classes) if classes else 0
    y = torch.arange(classes).repeat_interleave(per_class) if classes else None
    with seeded(seed):
        x = run.sample(len(y) if classes else n, y=y).cpu()
    images = as_images(x, tuple(x.shape[1:]))
    if images is None:
        return None
    what = (f"{per_class} samples per class, one row per label 0..{classes - 1}" if classes
            else f"{n} samples")
    how = ("codes drawn from the prior, then decoded" if run.config.get("prior_of")
           else "from the prior (decoder mean)" if isinstance(run.model, ContinuousCode)
           else "drawn from the model")
    title = f"{run.describe()}\n{what}, {how}, seed {seed}"
    return save_image_grid(images, path, title, ncols=per_class or None)


def save_loss_curves(history: list[dict], path: Path, title: str) -> Path:
    terms = sorted({k.split("_", 1)[1] for row in history for k in row if k.startswith(("train_", "test_"))})
    fig, axes = plt.subplots(1, max(1, len(terms)), figsize=(3.2 * max(1, len(terms)), 3), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for split, style in (("train", "-"), ("test", "--")):
            pts = [(r["epoch"], r[f"{split}_{term}"]) for r in history if f"{split}_{term}" in r]
            if pts:
                ax.plot(*zip(*pts), style, marker=".", label=split)
        ax.set_xlabel("epoch")
        unit = unit_of(f"train_{term}")                  # from the one glossary
        ax.set_title(f"{term} ({unit})" if unit else term, fontsize=9)
        ax.legend(fontsize=7)
    return _save_titled(fig, path, title, fontsize=8)


def write_run_figures(run) -> list[Path]:
    """Reconstructions, samples and loss curves into RUN/figures/; returns the paths written."""
    out = run.path / "figures"
    written = [save_reconstructions(run, out / "reconstructions.png"),
               save_samples(run, out / "samples.png"),
               save_loss_curves(run.history(), out / "loss_curves.png",
                                f"{run.describe()}: loss per epoch")]
    return [p for p in written if p is not None]
