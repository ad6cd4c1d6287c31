"""What ``Model.forward`` returns: the loss, per-example terms and batch statistics.

Two kinds of numbers, kept apart so that averaging over batches and over data-parallel
ranks is exact:

* ``terms``: per-example values (B,) in nats (or per-dimension errors). Their mean over an
  epoch is sum / count; across ranks, all-reduce the sums and the counts.
* ``stats``: batch statistics that are not means of per-example values (codebook
  perplexity, the sparsity KL of the mean activation). Each is a :class:`Statistic`: an
  additive ``total`` (summed over batches, all-reduced with SUM across ranks) and a
  ``finish`` that turns the accumulated total into the reported number.

A statistic whose name is also in ``terms`` is the exact version of a per-batch copy kept
there for callers that only read terms (the metrics columns stay the same); readers that
understand ``stats`` take the statistic and ignore that term (``Losses.example_terms``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch


def _identity(total: torch.Tensor) -> torch.Tensor:
    return total


@dataclass(frozen=True)
class Statistic:
    """A batch statistic: ``finish(sum of total over batches and ranks)``."""

    total: torch.Tensor                                   # additive: counts, sums (any shape)
    finish: Callable[[torch.Tensor], torch.Tensor] = _identity

    def value(self) -> float:
        return float(self.finish(self.total))

    def merge(self, other: "Statistic") -> "Statistic":
        return Statistic(self.total + other.total, self.finish)


@dataclass
class Losses:
    """The scalar to minimise, per-example terms (B,) and batch statistics."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    stats: dict[str, Statistic] = field(default_factory=dict)

    def example_terms(self) -> dict[str, torch.Tensor]:
        """The per-example terms without the per-batch copies of statistics."""
        return {k: v for k, v in self.terms.items() if k not in self.stats}


class StatisticAccumulator:
    """Sums the statistics of many batches; ``values()`` finishes them. Under data
    parallelism all-reduce each ``totals[name]`` with SUM before calling ``values``."""

    def __init__(self):
        self.stats: dict[str, Statistic] = {}

    def add(self, stats: dict[str, Statistic]) -> None:
        for k, s in stats.items():
            s = Statistic(s.total.detach().double(), s.finish)
            self.stats[k] = self.stats[k].merge(s) if k in self.stats else s

    @property
    def totals(self) -> dict[str, torch.Tensor]:
        return {k: s.total for k, s in self.stats.items()}

    def values(self) -> dict[str, float]:
        return {k: s.value() for k, s in self.stats.items()}


@torch.no_grad()
def mean_loss_terms(model, batches: Iterable, device="cpu") -> dict[str, float]:
    """Each per-example term's mean over all examples and each statistic over all batches
    (eval mode); a statistic replaces the per-batch copy of the same name."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    stats = StatisticAccumulator()
    n = 0
    try:
        for b in batches:
            b = b.to(device)
            out = model(b.x, b.y)
            for k, v in out.terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.double().sum())
            stats.add(out.stats)
            n += len(b)
    finally:
        model.train(was_training)
    return {**{k: v / max(n, 1) for k, v in sums.items()}, **stats.values()}
