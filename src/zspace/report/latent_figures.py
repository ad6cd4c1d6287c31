"""Latent-space figures of a run: traversals, manifold, interpolations, scatter, per-class
samples and attribute vectors. Each takes an opened run, writes one PNG and returns its
path; titles name the data, the model, and how many examples and which settings were used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.sources import CLASS_NAMES
from ..errors import ConfigError
from ..explore import latent
from ..models.capabilities import SamplesFromPrior
from ..rng import seeded
from ..tasks import check_label, grey_levels, model_device
from .figures import _save_titled, as_images, plt, save_image_grid, save_labelled_rows


def _images(run, x: torch.Tensor) -> torch.Tensor:
    images = as_images(x.cpu(), run.model.config.input_shape)
    if images is None:
        raise ConfigError("the run's data are not images: latent figures need image data")
    return images


def class_names(run, num_classes: int) -> list[str]:
    names = CLASS_NAMES.get(run.data_spec.source)
    return list(names) if names and len(names) >= num_classes else [str(c) for c in range(num_classes)]


def _conditional(run) -> int:
    return run.model.num_classes


def label_argument(run, label: int | None, default: int | None = None) -> int | None:
    """A user's class choice (--label) checked against the run's model; a conditional model
    without one gets ``default``, or an error when there is none."""
    return check_label(run, label, default)


def activity(run, split: str = "test", limit: int | None = 2000) -> latent.Activity:
    return latent.per_dimension_activity(run.model, run.loader(split, 500, limit=limit).epoch(0))


def save_traversal(run, path: Path, dims: Sequence[int] | None = None, num_dims: int = 8, steps: int = 9,
                   span: float = 3.0, label: int | None = None, limit: int = 2000,
                   example: int | None = None, measured: latent.Activity | None = None) -> Path:
    """Rows: latent dimensions (default: the most active by KL); columns: the swept value.

    The other dimensions stay at the prior mean (the mean code for a model without a
    prior), or at the code of test example number ``example``. ``measured``: the run's
    activity if already computed (default: measured here on ``limit`` test examples)."""
    label = label_argument(run, label, default=0)
    act = measured if measured is not None else activity(run, limit=limit)
    if dims is None:
        dims = act.ranked()[:min(num_dims, len(act.kl))].tolist()
    codes = None if isinstance(run.model, SamplesFromPrior) else _encoded(run, "test", limit)[2]
    center, scale = latent.prior_reference(run.model, codes)
    base, where = center, "the prior mean" if codes is None else "the mean code"
    if example is not None:
        n = len(run.data().test)
        if not 0 <= example < n:
            raise ConfigError(f"example {example} out of range: the test split has {n} examples (0..{n - 1})")
        _, y, z = _encoded(run, "test", example + 1)
        base, where = torch.from_numpy(z[example]), f"the code of test example {example}"
        if _conditional(run):
            label = int(y[example])
    values = latent.traversal_values(steps, span)
    grid = latent.traverse(run.model, dims, values, z0=base, y=label, scale=scale, center=center)
    unit = "prior std" if isinstance(run.model, SamplesFromPrior) else "code std"
    rows = []
    for i, d in enumerate(dims):
        stat = f"KL {act.kl[d]:.2f}" if np.isfinite(act.kl[d]) else f"var {act.variance[d]:.2g}"
        rows.append((f"z{d}\n{stat}", _images(run, grid[i])))
    cond = f", label {class_names(run, _conditional(run))[label]}" if label is not None else ""
    title = (f"{run.describe()}\ntraversal: each row sweeps one dimension from {-span:g} to {span:g} {unit} "
             f"({steps} steps), the others at {where}{cond}; "
             f"rows ranked by {'KL' if np.isfinite(act.kl).all() else 'variance'} on {act.num_examples} test examples "
             f"({act.num_active} of {len(act.kl)} dimensions active, A > {act.threshold:g})")
    return save_labelled_rows(rows, path, title)


def save_manifold(run, path: Path, n: int = 20, plane: Sequence[int] | None = None,
                  label: int | None = None) -> Path:
    label = label_argument(run, label, default=0)
    if plane is None and run.model.config.latent_dim > 2:
        raise ConfigError(f"the model has {run.model.config.latent_dim} latent dimensions: "
                          f"choose a plane (--plane I,J)")
    grid = latent.manifold(run.model, n, plane, y=label)
    images = _images(run, grid.reshape(n * n, *grid.shape[2:]))
    where = ("its 2-D latent space" if plane is None else
             f"the plane of z{plane[0]} (across) and z{plane[1]} (up), other dimensions at 0")
    cond = f", label {class_names(run, _conditional(run))[label]}" if label is not None else ""
    history = run.history()
    trained = f", after {history[-1]['epoch']} epochs" if history and "epoch" in history[-1] else ""
    title = (f"{run.describe()}{trained}\nlearned manifold: decoder means on the {n}x{n} grid Φ⁻¹(u), "
             f"u evenly spaced in [0.05, 0.95]², on {where}{cond}")
    return save_image_grid(images, path, title, ncols=n)


@torch.no_grad()
def _encoded(run, split: str, limit: int | None) -> tuple[torch.Tensor, np.ndarray | None, np.ndarray]:
    """(inputs as the model sees them, labels or None, codes (N, D)) of a split's first examples."""
    run.model.eval()
    xs, zs = [], []
    loader = run.loader(split, 500, limit=limit)
    device = model_device(run.model)
    for b in loader.epoch(0):
        xs.append(b.x)
        moved = b.to(device)
        zs.append(run.model.embed(moved.x, moved.y).cpu())
    return torch.cat(xs), loader.data.y, torch.cat(zs).numpy()


def save_interpolations(run, path: Path, pairs: int = 4, steps: int = 10, seed: int = 0,
                        split: str = "test") -> Path:
    """Rows: linear and spherical paths between the codes of consecutive pairs of the
    split's first 2 * ``pairs`` examples."""
    loader = run.loader(split, 2 * pairs, limit=2 * pairs)
    batch = next(iter(loader.epoch(0)))
    if len(batch) < 2 * pairs:
        raise ConfigError(f"need {2 * pairs} examples for {pairs} pairs, the split has {len(batch)}")
    grey = grey_levels(run, split, 2 * pairs, batch.x)     # shown ends: grey levels, not a binarized draw
    rows = []
    for p in range(pairs):
        a, b = 2 * p, 2 * p + 1
        ya = None if batch.y is None or not _conditional(run) else int(batch.y[a])
        yb = None if ya is None else int(batch.y[b])
        for method in latent.INTERPOLATIONS:
            path_x = latent.interpolate_inputs(run.model, batch.x[a], batch.x[b], steps, method, ya, yb)
            ends = _images(run, grey[[a, b]])
            rows.append((f"pair {p + 1}\n{method}", torch.cat([ends[:1], _images(run, path_x), ends[1:]])))
    title = (f"{run.describe()}\ninterpolation between the codes of {split} examples "
             f"(first and last columns: the inputs, as grey levels; {steps} decoded steps between, linear and slerp)")
    return save_labelled_rows(rows, path, title)


def save_scatter(run, path: Path, split: str = "test", limit: int | None = 5000) -> Path:
    """The codes coloured by label, beside PCA of the raw pixels, both in 2-D."""
    from sklearn.decomposition import PCA

    x, y, z = _encoded(run, split, limit)
    raw = x.reshape(len(x), -1).float().numpy()
    panels = []
    if z.shape[1] == 2:
        panels.append((z, "latent codes (2-D, as they are)", ("z0", "z1")))
    else:
        pca = PCA(2, random_state=0).fit(z)
        ev = pca.explained_variance_ratio_
        panels.append((pca.transform(z), f"latent codes ({z.shape[1]}-D), PCA to 2-D "
                       f"({100 * ev.sum():.0f}% of the variance)", ("PC1", "PC2")))
    pca_raw = PCA(2, random_state=0).fit(raw)
    panels.append((pca_raw.transform(raw), f"input pixels, PCA to 2-D "
                   f"({100 * pca_raw.explained_variance_ratio_.sum():.0f}% of the variance)", ("PC1", "PC2")))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    names = class_names(run, int(y.max()) + 1) if y is not None else None
    for ax, (pts, name, labels) in zip(axes, panels):
        if y is None:
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
        else:
            for c in np.unique(y):
                sel = y == c
                ax.scatter(pts[sel, 0], pts[sel, 1], s=2, alpha=0.6, label=names[c], color=plt.cm.tab10(c % 10))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
    if y is not None:
        axes[1].legend(markerscale=5, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    title = f"{run.describe()}\n{len(z)} {split} examples coloured by label (posterior means / codes)"
    return _save_titled(fig, Path(path), title, fontsize=9)


def save_class_samples(run, path: Path, per_class: int = 10, seed: int = 0) -> Path:
    """A conditional model's prior samples, one row per class."""
    k = _conditional(run)
    if not k:
        raise ConfigError(f"{run.describe()} is not conditional: per-class samples need a cvae")
    names = class_names(run, k)
    rows = []
    with seeded(seed):
        for c in range(k):
            x = run.sample(per_class, y=c)
            rows.append((names[c], as_images(x.cpu(), tuple(x.shape[1:]))))
    title = f"{run.describe()}\n{per_class} prior samples per class (decoder mean), seed {seed}"
    return save_labelled_rows(rows, path, title)


def save_attribute(run, path: Path, positive: int | None = None, negative: int | None = None,
                   mask=None, strengths=(-3, -2, -1, 0, 1, 2, 3), n: int = 6, split: str = "test",
                   limit: int | None = 5000, name: str | None = None) -> Path:
    """Resynthesis: inputs moved along mean(z|attribute) - mean(z|not), at several strengths.

    The attribute is either a class pair (``positive`` against ``negative``, or against all
    other classes) or a boolean ``mask`` over the split's first ``limit`` examples. The
    inputs shown are examples without the attribute (they gain it at positive strengths).
    """
    x, y, z = _encoded(run, split, limit)
    if mask is None:
        if positive is None:
            raise ConfigError("give an attribute: a class (--positive, optional --negative) or a boolean mask")
        if y is None:
            raise ConfigError("the data have no labels: give the attribute as a boolean mask")
        has, keep = latent.class_pair_mask(y, positive, negative)
        names = class_names(run, int(y.max()) + 1)
        name = name or (f"{names[positive]} − {names[negative]}" if negative is not None
                        else f"{names[positive]} − other classes")
    else:
        has = np.asarray(mask)
        keep = np.ones(len(z), bool)
        if has.shape != (len(z),):
            raise ConfigError(f"the mask must have one entry per example: {len(z)} examples, shape {has.shape}")
        name = name or "attribute"
    vector = latent.attribute_vector(z[keep], has)
    idx = torch.from_numpy(np.flatnonzero(keep)[~has.astype(bool)][:n])
    yb = None if not _conditional(run) else torch.from_numpy(y)[idx]
    moved = latent.apply_attribute(run.model, x[idx], vector, strengths, y=yb)
    rows = [(f"input {i + 1}", torch.cat([_images(run, x[j:j + 1]), _images(run, moved[i])]))
            for i, j in enumerate(idx.tolist())]
    title = (f"{run.describe()}\nattribute vector '{name}' (from {int(has.sum())} vs {int((~has.astype(bool)).sum())} "
             f"{split} codes); first column: input, then decode(z + s·v) for s = "
             f"{', '.join(f'{s:g}' for s in strengths)}")
    return save_labelled_rows(rows, path, title)
