"""Published test likelihoods to read a run's numbers against, with their sources.

A reference applies to a run only when the data set and what the likelihood is over agree:
binary MNIST redrawn every epoch (dynamic binarization), the fixed binarization of Larochelle
& Murray (static), or the 256 levels of 8-bit pixels. Numbers are the papers' own; the
benchmarks in benchmarks/RESULTS.md reproduce the first ones on this machine.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    data: str        # a named data set: "mnist", "fashion-mnist"
    over: str        # "dynamic-binary", "static-binary" or "8-bit"
    measure: str     # a glossary key: "nll" (nats) or "bits_per_dim"
    value: float
    model: str
    source: str


REFERENCES: tuple[Reference, ...] = (
    Reference("mnist", "dynamic-binary", "nll", 86.76, "VAE, one stochastic layer (784-200-200-50), k = 1",
              "Burda, Grosse & Salakhutdinov 2016, Table 1 (NLL by k = 5000 importance samples)"),
    Reference("mnist", "dynamic-binary", "nll", 85.54, "IWAE, k = 5, same network",
              "Burda, Grosse & Salakhutdinov 2016, Table 1"),
    Reference("mnist", "dynamic-binary", "nll", 84.78, "IWAE, k = 50, same network",
              "Burda, Grosse & Salakhutdinov 2016, Table 1"),
    Reference("mnist", "static-binary", "nll", 81.30, "PixelCNN",
              "van den Oord, Kalchbrenner & Kavukcuoglu 2016, Pixel Recurrent Neural Networks"),
    Reference("mnist", "static-binary", "nll", 79.20, "Diagonal BiLSTM, 7 layers (PixelRNN)",
              "van den Oord, Kalchbrenner & Kavukcuoglu 2016, Pixel Recurrent Neural Networks"),
    Reference("fashion-mnist", "8-bit", "bits_per_dim", 2.96, "Glow",
              "Nalisnick et al. 2019, Do Deep Generative Models Know What They Don't Know?"),
)


def likelihood_over(preprocessing: str, meaning_note: str = "") -> str | None:
    """What a run's likelihood is over ('dynamic-binary', 'static-binary', '8-bit'), or None
    when it is a density no published discrete likelihood compares with."""
    if preprocessing == "dynamic-binarize":
        return "dynamic-binary"
    if preprocessing == "static-binarize":
        return "static-binary"
    if "8-bit" in meaning_note:      # a discrete likelihood over 256 levels (or a dequantized bound)
        return "8-bit"
    return None


def references_for(data: str, over: str | None) -> list[Reference]:
    """The references that apply to a run on ``data`` whose likelihood is ``over``."""
    return [r for r in REFERENCES if r.data == data and over is not None and r.over == over]
