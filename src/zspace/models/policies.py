"""Model-owned policies: which preprocessing a model takes by default and accepts, and
what its likelihood number means for a given preprocessing.

``Model.default_preprocessing``, ``Model.check_preprocessing`` and
``Model.likelihood_meaning`` call these with the model's own decoder likelihood
(``Model.likelihood_name``); a model with other rules overrides the methods.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

BINARY_SAFE = ("dynamic-binarize", "static-binarize", "scale")   # inputs in [0, 1]


@dataclass(frozen=True)
class LikelihoodMeaning:
    """What an NLL number means for a (decoder likelihood, preprocessing) pair."""

    kind: str                  # "probability", "density bound" or "not a likelihood"
    offset_nats_per_dim: float  # added per dimension before converting to bits/dim
    note: str


def likelihood_meaning(likelihood: str, preprocessing: str) -> LikelihoodMeaning:
    if likelihood in ("categorical", "logistic-mixture") and preprocessing == "uint8":
        return LikelihoodMeaning("probability", 0.0, "NLL of 8-bit data; bits per 8-bit subpixel")
    if likelihood == "logistic" and preprocessing == "scale":   # 8-bit data (the VAE checks it) as k/255
        return LikelihoodMeaning("probability", 0.0, "discretized logistic over the 256 levels of each "
                                                     "subpixel: NLL of 8-bit data; bits per 8-bit subpixel")
    if likelihood == "bernoulli":
        if preprocessing in ("dynamic-binarize", "static-binarize"):
            return LikelihoodMeaning("probability", 0.0, "NLL of binary data; bits per binary dimension")
        return LikelihoodMeaning("not a likelihood", 0.0,
                                 f"Bernoulli cross-entropy on non-binary ({preprocessing}) data: "
                                 "not comparable with published likelihoods")
    if preprocessing == "dequantize":
        return LikelihoodMeaning("density bound", math.log(256.0),
                                 "continuous density on dequantized 8-bit data: an upper bound on "
                                 "the discrete NLL; bits per 8-bit subpixel")
    return LikelihoodMeaning("density", 0.0, f"continuous density on {preprocessing} data (nats may be "
                                             "negative); bits/dim not comparable with discrete data")


def default_preprocessing(integer_inputs: bool, likelihood: str | None, data) -> str:
    """Binarize 8-bit data for a Bernoulli decoder; scale data in [0, 1]; else leave it be."""
    if integer_inputs:
        return "uint8"
    if not data.is_8bit:
        lo, hi = data.sampled_range()
        return "none" if lo < 0 or hi > 1 else "scale"
    if likelihood == "bernoulli":
        return "dynamic-binarize"
    return "scale"


def check_preprocessing(integer_inputs: bool, likelihood: str | None, model_name: str, preprocessing: str) -> None:
    """Rejects preprocessing a model cannot take (with the reason and the alternatives)."""
    if (preprocessing == "uint8") != integer_inputs:
        wanted = "integer (uint8)" if integer_inputs else "real-valued"
        raise ConfigError(f"preprocessing {preprocessing!r} does not give the {wanted} inputs the "
                          f"{model_name} model takes")
    if likelihood == "logistic" and preprocessing != "scale":
        raise ConfigError(f"the discretized logistic likelihood is over 8-bit values k/255: use preprocessing "
                          f"'scale' (8-bit data), not {preprocessing!r}")
    if likelihood == "bernoulli" and preprocessing not in BINARY_SAFE:
        raise ConfigError(f"a Bernoulli decoder needs inputs in [0, 1]; preprocessing {preprocessing!r} "
                          f"does not guarantee that: use dynamic-binarize, static-binarize or scale, "
                          f"or a Gaussian likelihood")
