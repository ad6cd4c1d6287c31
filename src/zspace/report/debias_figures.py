"""The DB-VAE's resampling weights over its training set: a histogram of the weights and the
most and least up-weighted training images (Amini et al. 2019, fig. 5 in spirit)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .figures import _save_titled, as_images, plt


@torch.no_grad()
def training_weights(run, limit: int | None = 10000, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(resampling probability of each of the first ``limit`` training examples under the run's
    latent histograms, normalised over them (N,); their row numbers (N,))."""
    model = run.model
    if not hasattr(model, "latent_weights"):
        raise ConfigError(f"{run.describe()} is not a DB-VAE: it has no resampling weights")
    device = next(model.parameters()).device
    means, rows = [], []
    for b in run.loader("train", batch_size, limit=limit).epoch(0):
        means.append(model.encode(b.x.to(device)).mean)
        rows.append(b.index)
    return model.latent_weights(torch.cat(means)).double().cpu().numpy(), np.concatenate(rows)


def save_debias_weights(run, path: Path, n: int = 12, limit: int | None = 10000) -> Path | None:
    """Weight histogram plus the ``n`` most and least up-weighted training images; None for
    data that are not images."""
    weights, rows = training_weights(run, limit)
    order = np.argsort(-weights, kind="stable")
    part = run.data().train
    shape = tuple(run.model.config.input_shape)
    top = as_images(torch.from_numpy(np.asarray(part.read(rows[order[:n]]))).float(), shape)
    low = as_images(torch.from_numpy(np.asarray(part.read(rows[order[::-1][:n]]))).float(), shape)
    if top is None:
        return None
    fig, axes = plt.subplots(3, n, figsize=(1.0 * n + 1.2, 4.2), squeeze=False,
                             gridspec_kw={"height_ratios": [1.6, 1, 1]})
    gs = axes[0][0].get_gridspec()
    for ax in axes[0]:
        ax.remove()
    hist = fig.add_subplot(gs[0, :])
    rel = weights * len(weights)                   # 1 = the uniform weight
    hist.hist(np.log10(rel), bins=50, color="0.3")
    hist.set_xlabel("log10(weight x N): 0 is uniform sampling")
    hist.set_ylabel("examples")
    for r, (label, images) in enumerate((("most up-weighted", top), ("least", low)), start=1):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                img = images[c].numpy().transpose(1, 2, 0)
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{rel[order[c] if r == 1 else order[::-1][c]]:.2g}", fontsize=7)
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    title = (f"{run.describe()} on {run.data_spec.source}: resampling weights of {len(weights)} training "
             f"examples (x N; max {rel.max():.3g}, min {rel.min():.3g})")
    return _save_titled(fig, path, title, fontsize=9)
