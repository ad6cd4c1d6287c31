"""Latent-space tools: what each code dimension does, and moving through the space.

Every function works for any model with ``embed(x, y)`` (the code of an input: the
posterior mean for a VAE) and ``decode_mean(z, y)`` (the decoder's mean in input space):
autoencoders, VAEs and conditional VAEs alike. Codes are (N, D) tensors; decoded
outputs keep the model's input shape. ``y`` (labels) matters only for conditional models.

    per_dimension_activity  KL per dimension and Burda et al.'s (2016) activity statistic
    traverse                one dimension swept while the others stay at a point
    manifold                the decoded grid Phi^-1(u), u evenly spaced in (0, 1)^2
                            (Kingma & Welling 2014, fig. 4), on a chosen plane
    interpolate             linear or spherical (White 2016) paths between two codes
    attribute_vector        mean(z | attribute) - mean(z | not attribute), and its
    apply_attribute         use on encoded inputs (resynthesis)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..models.capabilities import LatentVariableModel, SamplesFromPrior

INTERPOLATIONS = ("linear", "slerp")
ACTIVITY_THRESHOLD = 1e-2     # Burda et al. 2016, section 5.2


def _latent_dim(model) -> int:
    return int(model.config.latent_dim)


def _check_dims(model, dims: Sequence[int], what: str = "dimension") -> list[int]:
    d = _latent_dim(model)
    dims = [int(i) for i in dims]
    if not dims:
        raise ConfigError(f"choose at least one latent {what}")
    bad = [i for i in dims if not 0 <= i < d]
    if bad:
        raise ConfigError(f"latent {what} {bad[0]} out of range: the model has {d} dimensions (0..{d - 1})")
    if len(set(dims)) != len(dims):
        raise ConfigError(f"latent {what}s must be distinct, got {dims}")
    return dims


def _point(model, z0) -> torch.Tensor:
    """The base point: zeros (the prior mean) by default, else a (D,) code."""
    d = _latent_dim(model)
    device = next(model.parameters()).device
    if z0 is None:
        return torch.zeros(d, device=device)
    z0 = torch.as_tensor(z0, dtype=torch.float32, device=device).reshape(-1)
    if z0.numel() != d or not torch.isfinite(z0).all():
        raise ConfigError(f"the base point must be {d} finite numbers, got {z0.numel()}")
    return z0


@dataclass
class Activity:
    """Per latent dimension over a data set: mean KL(q(z_d|x) || N(0,1)) in nats and the
    variance over x of E_q[z_d] (Burda et al.'s activity statistic A_d)."""

    kl: np.ndarray              # (D,) nats per example
    variance: np.ndarray        # (D,)
    num_examples: int
    threshold: float = ACTIVITY_THRESHOLD

    @property
    def active(self) -> np.ndarray:
        return self.variance > self.threshold

    @property
    def num_active(self) -> int:
        return int(self.active.sum())

    def ranked(self) -> np.ndarray:
        """Dimensions, most informative first (by KL, or by code variance if there is no KL)."""
        key = self.kl if np.isfinite(self.kl).all() else self.variance
        return np.argsort(-key, kind="stable")


@torch.no_grad()
def per_dimension_activity(model, batches: Iterable, threshold: float = ACTIVITY_THRESHOLD) -> Activity:
    """KL per dimension (NaN for a model without a posterior) and code variance over the data."""
    model.eval()
    device = next(model.parameters()).device
    means, kls = [], []
    for b in batches:
        b = b.to(device)
        x, y = b.x, b.y
        if isinstance(model, LatentVariableModel):       # a posterior q(z|x): per-dimension KL
            q = model.encode(x, y)
            means.append(q.mean.double().cpu())
            kls.append((0.5 * (q.mean ** 2 + q.log_var.exp() - 1 - q.log_var)).double().cpu())
        else:
            means.append(model.embed(x, y).double().cpu())
    if not means:
        raise DataError("no examples to measure activity on")
    m = torch.cat(means)
    kl = torch.cat(kls).mean(0).numpy() if kls else np.full(m.shape[1], np.nan)
    var = m.var(0, unbiased=False).numpy() if len(m) > 1 else np.zeros(m.shape[1])
    return Activity(kl, var, len(m), threshold)


def traversal_values(n: int = 9, span: float = 3.0) -> torch.Tensor:
    """n values evenly spaced in [-span, span] (prior standard deviations for a VAE)."""
    if n < 2 or not span > 0:
        raise ConfigError(f"a traversal needs n >= 2 steps and span > 0, got n={n}, span={span}")
    return torch.linspace(-span, span, n)


@torch.no_grad()
def traverse(model, dims: Sequence[int], values, z0=None, y=None, scale=None, center=None) -> torch.Tensor:
    """Decodes z0 with dimension d set to each of ``values`` in turn, for each d in ``dims``.

    Dimension d takes center[d] + value * scale[d]; by default center 0 and scale 1, so
    ``values`` are coordinates in prior standard deviations. Returns
    (len(dims), len(values), *input_shape).
    """
    dims = _check_dims(model, dims)
    base = _point(model, z0)
    values = torch.as_tensor(values, dtype=torch.float32, device=base.device).reshape(-1)
    if len(values) < 1 or not torch.isfinite(values).all():
        raise ConfigError("traversal values must be finite numbers")
    center = torch.zeros_like(base) if center is None else _point(model, center)
    scale = torch.ones_like(base) if scale is None else _point(model, scale)
    z = base.repeat(len(dims), len(values), 1)                   # (dims, V, D)
    for i, d in enumerate(dims):
        z[i, :, d] = center[d] + values * scale[d]
    flat = z.reshape(-1, base.numel())
    out = model.decode_mean(flat, y)   # y: one label for the whole grid
    return out.reshape(len(dims), len(values), *out.shape[1:])


def inverse_cdf_grid(n: int, margin: float = 0.05) -> torch.Tensor:
    """Phi^-1(u) for u evenly spaced in [margin, 1 - margin] (n values), as in Kingma & Welling."""
    if n < 2:
        raise ConfigError(f"a manifold grid needs n >= 2, got {n}")
    if not 0 < margin < 0.5:
        raise ConfigError(f"margin must lie in (0, 0.5), got {margin}")
    return torch.special.ndtri(torch.linspace(margin, 1 - margin, n, dtype=torch.float64)).float()


@torch.no_grad()
def manifold(model, n: int = 20, plane: Sequence[int] | None = None, z0=None, y=None,
             margin: float = 0.05) -> torch.Tensor:
    """Decodes the grid Phi^-1(u) on the plane of two latent dimensions (the others at z0).

    A 2-D model uses its two dimensions; a larger one needs ``plane=(i, j)``.
    Row r, column c has z_i = g[c], z_j = g[n-1-r] (so up is +z_j). Returns (n, n, *shape).
    """
    d = _latent_dim(model)
    if plane is None:
        if d != 2:
            raise ConfigError(f"the model has {d} latent dimensions: choose the plane to draw, "
                              f"two dimensions (e.g. plane=(0, 1), --plane 0,1)")
        plane = (0, 1)
    if len(plane) != 2:
        raise ConfigError(f"a plane is two latent dimensions, got {list(plane)}")
    i, j = _check_dims(model, plane, "plane dimension")
    g = inverse_cdf_grid(n, margin).to(_point(model, None).device)
    z = _point(model, z0).repeat(n, n, 1)                        # (rows, cols, D)
    z[:, :, i] = g[None, :]
    z[:, :, j] = g.flip(0)[:, None]
    flat = z.reshape(n * n, d)
    out = model.decode_mean(flat, y)
    return out.reshape(n, n, *out.shape[1:])


def interpolate(z0, z1, steps: int = 10, method: str = "linear") -> torch.Tensor:
    """Codes on the path from z0 to z1 (endpoints included), (steps, D).

    ``slerp`` follows the great circle (White 2016, "Sampling generative networks"):
    under a Gaussian prior, linear midpoints have atypically small norm; spherical ones
    keep the norm when |z0| = |z1|.
    """
    if method not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation {method!r}; choose {' or '.join(INTERPOLATIONS)}")
    if steps < 2:
        raise ConfigError(f"an interpolation needs at least 2 steps, got {steps}")
    z0, z1 = torch.as_tensor(z0, dtype=torch.float32), torch.as_tensor(z1, dtype=torch.float32)
    if z0.shape != z1.shape or z0.dim() != 1:
        raise ConfigError(f"interpolation endpoints must be two codes of one size, got {tuple(z0.shape)} "
                          f"and {tuple(z1.shape)}")
    t = torch.linspace(0, 1, steps, device=z0.device)[:, None]
    if method == "linear":
        return (1 - t) * z0 + t * z1
    n0, n1 = z0.norm(), z1.norm()
    if n0 == 0 or n1 == 0:
        return (1 - t) * z0 + t * z1
    cos = torch.clamp(torch.dot(z0 / n0, z1 / n1), -1.0, 1.0)
    if cos > 1 - 1e-6:                                         # parallel: the arc is the segment
        return (1 - t) * z0 + t * z1
    omega = torch.arccos(cos)
    if cos < -1 + 1e-6:                                        # opposite: no unique great circle
        raise ConfigError("slerp between opposite codes is undefined (every great circle joins them); "
                          "use linear interpolation")
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


@torch.no_grad()
def interpolate_inputs(model, x0, x1, steps: int = 10, method: str = "linear", y0=None, y1=None) -> torch.Tensor:
    """Encodes two inputs, interpolates their codes and decodes the path: (steps, *shape).

    For a conditional model the label switches from y0 to y1 halfway. The inputs are moved to the
    model's device; the path stays there."""
    device = next(model.parameters()).device
    z0 = model.embed(x0[None].to(device), None if y0 is None else torch.as_tensor([y0]))[0]
    z1 = model.embed(x1[None].to(device), None if y1 is None else torch.as_tensor([y1]))[0]
    path = interpolate(z0, z1, steps, method)
    y = None
    if y0 is not None:
        y = torch.where(torch.arange(steps) < steps / 2, int(y0), int(y1 if y1 is not None else y0))
    return model.decode_mean(path, y)


def attribute_vector(codes, mask) -> torch.Tensor:
    """mean(z | attribute) - mean(z | not attribute): codes (N, D), mask (N,) booleans."""
    z = torch.as_tensor(np.asarray(codes), dtype=torch.float64)
    m = np.asarray(mask)
    if z.dim() != 2:
        raise DataError(f"codes must be (N, D), got shape {tuple(z.shape)}")
    if m.shape != (len(z),):
        raise DataError(f"the attribute must be one boolean per code: {len(z)} codes, mask shape {m.shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise DataError("the attribute must be booleans (or 0/1)")
        m = m.astype(bool)
    if m.all() or not m.any():
        raise DataError(f"the attribute must hold for some examples and not for others "
                        f"({int(m.sum())} of {len(m)} have it)")
    t = torch.from_numpy(m)
    return (z[t].mean(0) - z[~t].mean(0)).float()


def class_pair_mask(labels, positive: int, negative: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mask, keep) for the attribute "label == positive" against "label == negative"
    (or against every other label when ``negative`` is None); ``keep`` selects the examples used."""
    y = np.asarray(labels)
    if y is None or y.ndim != 1:
        raise DataError("a class attribute needs one label per example")
    if positive not in set(y.tolist()):
        raise DataError(f"no example has label {positive}")
    if negative is not None and negative not in set(y.tolist()):
        raise DataError(f"no example has label {negative}")
    keep = np.ones(len(y), bool) if negative is None else np.isin(y, (positive, negative))
    return (y == positive)[keep], keep


@torch.no_grad()
def apply_attribute(model, x: torch.Tensor, vector, strengths=(-2, -1, 0, 1, 2), y=None) -> torch.Tensor:
    """decode(embed(x) + s * vector) for each strength s: (len(x), len(strengths), *shape)."""
    v = torch.as_tensor(vector, dtype=torch.float32).reshape(-1)
    if v.numel() != _latent_dim(model) or not torch.isfinite(v).all():
        raise ConfigError(f"the attribute vector must be {_latent_dim(model)} finite numbers, got {v.numel()}")
    s = torch.as_tensor(strengths, dtype=torch.float32).reshape(-1)
    if len(s) < 1 or not torch.isfinite(s).all():
        raise ConfigError("strengths must be finite numbers")
    device = next(model.parameters()).device
    y = None if y is None else torch.as_tensor(y).to(device)
    z = model.embed(x.to(device), y)                                   # (B, D)
    moved = z[:, None, :] + s.to(device)[None, :, None] * v.to(device)  # (B, S, D)
    yy = None if y is None else y.repeat_interleave(len(s))
    out = model.decode_mean(moved.reshape(-1, z.shape[1]), yy)
    return out.reshape(len(x), len(s), *out.shape[1:])


def prior_reference(model, codes=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(center, scale) per dimension for traversals: the prior N(0, I) for models with one,
    otherwise the mean and standard deviation of the data's codes."""
    d = _latent_dim(model)
    if isinstance(model, SamplesFromPrior):
        return torch.zeros(d), torch.ones(d)
    if codes is None:
        raise ConfigError("a model without a prior needs the data's codes to set the traversal range")
    z = torch.as_tensor(np.asarray(codes), dtype=torch.float32)
    return z.mean(0), z.std(0).clamp_min(1e-6)
