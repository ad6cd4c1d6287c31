"""Corruption processes for denoising autoencoders (Vincent et al. 2008, 2010).

Each is an object applied to a batch of clean inputs in [0, 1] with an explicit
generator, so a corrupted batch is reproducible; the clean input stays the target.

    GaussianNoise(std)          x + N(0, std^2), clipped to [0, 1]
    BlindGaussianNoise(max_std) the same with std ~ U(0, max_std) drawn per example, so one
                                model learns to denoise every level up to max_std
    Masking(fraction)           each input dimension set to 0 with probability ``fraction``
    SaltAndPepper(fraction)     each dimension, with probability ``fraction``, set to 0 or 1 (even odds)
    InputDropout(rate)          masking followed by rescaling by 1 / (1 - rate), as dropout does
    Mutation(rate)              each dimension, with probability ``rate``, replaced by a level
                                drawn uniformly from {0, 1/255, ..., 1} (Ren et al. 2019's
                                perturbation for the background model of a likelihood ratio);
                                ``levels`` and ``top`` set the value space of other inputs:
                                Mutation(r, 2) for binary pixels, Mutation(r, 256, 255.0) for
                                8-bit integers
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError


class Corruption:
    name = "none"

    def __init__(self, level: float = 0.0):
        self.level = float(level)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.level:g})"


def check_fraction(name: str, value, upper_open: bool = False) -> None:
    """A rate or fraction in [0, 1] ([0, 1) with ``upper_open``), as corruptions and model
    configs take them."""
    number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not (number and (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0)):
        bound = "[0, 1)" if upper_open else "[0, 1]"
        raise ConfigError(f"{name} must lie in {bound}, got {value!r}")


def _uniform(x: torch.Tensor, generator) -> torch.Tensor:
    return torch.rand(x.shape, generator=generator, device="cpu").to(x.device)


class GaussianNoise(Corruption):
    name = "gaussian"

    def __init__(self, std: float):
        if not (math.isfinite(std) and std >= 0):
            raise ConfigError(f"noise standard deviation must be >= 0, got {std}")
        super().__init__(std)

    def __call__(self, x, generator=None):
        noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
        return (x + self.level * noise).clamp(0.0, 1.0)


class BlindGaussianNoise(GaussianNoise):
    name = "gaussian-blind"

    def __call__(self, x, generator=None):
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        std = self.level * torch.rand(shape, generator=generator, device="cpu").to(x.device)
        noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
        return (x + std * noise).clamp(0.0, 1.0)


class Masking(Corruption):
    name = "masking"

    def __init__(self, fraction: float):
        check_fraction("masking fraction", fraction)
        super().__init__(fraction)

    def __call__(self, x, generator=None):
        return x * (_uniform(x, generator) >= self.level).to(x.dtype)


class SaltAndPepper(Corruption):
    name = "salt-and-pepper"

    def __init__(self, fraction: float):
        check_fraction("salt-and-pepper fraction", fraction)
        super().__init__(fraction)

    def __call__(self, x, generator=None):
        hit = _uniform(x, generator) < self.level
        salt = (_uniform(x, generator) < 0.5).to(x.dtype)
        return torch.where(hit, salt, x)


class InputDropout(Corruption):
    name = "dropout"

    def __init__(self, rate: float):
        check_fraction("input dropout rate", rate, upper_open=True)
        super().__init__(rate)

    def __call__(self, x, generator=None):
        keep = (_uniform(x, generator) >= self.level).to(x.dtype)
        return x * keep / (1.0 - self.level)


class Mutation(Corruption):
    name = "mutation"

    def __init__(self, rate: float, levels: int = 256, top: float = 1.0):
        check_fraction("mutation rate", rate)
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ConfigError(f"mutation needs at least 2 levels, got {levels!r}")
        super().__init__(rate)
        self.levels, self.top = levels, float(top)

    def __call__(self, x, generator=None):
        hit = _uniform(x, generator) < self.level
        draw = torch.randint(0, self.levels, x.shape, generator=generator, device="cpu")
        values = (draw * self.top / (self.levels - 1)).to(x.device, x.dtype)
        return torch.where(hit, values, x)


CORRUPTIONS = {c.name: c for c in (Corruption, GaussianNoise, BlindGaussianNoise, Masking, SaltAndPepper,
                                    InputDropout, Mutation)}


def make_corruption(name: str, level: float = 0.0) -> Corruption:
    """A corruption by name: one of CORRUPTIONS' keys."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name](level) if name != "none" else Corruption()
