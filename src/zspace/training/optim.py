"""Optimizers the trainer builds beyond torch.optim's.

``ScheduleFreeSignum``: sign descent with schedule-free averaging. Defazio et al. (2024, "The
Road Less Scheduled") replace a learning-rate schedule by evaluating the gradient at an
interpolation of a base iterate and its running average:

    y_t     = (1 - beta) z_t + beta x_t          # where the gradient is taken (the parameters)
    z_{t+1} = z_t - lr * sign(grad f(y_t))        # the base step: signSGD (Bernstein et al. 2018)
    x_{t+1} = (1 - 1/(t+1)) x_t + 1/(t+1) z_{t+1} # uniform average of the base iterates

and the average x is the point to evaluate and keep. EleutherAI's sparsify trains its sparse
autoencoders this way by default (momentum 0.95); on stories260K's residual stream at 128
steps of 4096 tokens it lowers a TopK SAE's held-out FVU against Adam at the same learning
rate (2048 features, k = 32: 0.052 -> 0.042; 512, k = 8: 0.110 -> 0.101).

While training, the parameters hold y. ``average()`` swaps x in for evaluation and for the
weights a checkpoint saves, and keeps y (the exact training point, after any projection a
callback made) in the optimizer state, so a resumed run continues bit for bit.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


class AveragedIterates:
    """An optimizer whose parameters during training are not the point to evaluate or save."""

    @contextmanager
    def average(self):
        yield

    def finish(self) -> None:
        """Leaves the evaluation point in the parameters for good (the end of training)."""

    def iterates(self, p: torch.Tensor) -> list[torch.Tensor]:
        """The copies of parameter ``p`` the optimizer keeps, for constraints (projections) that
        must hold for all of them."""
        return []

    def restore_training_point(self) -> None:
        """After a resume: the parameters back at the training point saved with the state."""


class ScheduleFreeSignum(AveragedIterates, torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.95, weight_decay: float = 0.0):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def _tracked(self):
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                if st:
                    yield group, p, st

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float64)
                    st["z"] = p.detach().clone()
                    st["x"] = p.detach().clone()
                z, x = st["z"], st["x"]
                if wd:
                    z.mul_(1 - lr * wd)
                z.add_(p.grad.sign(), alpha=-lr)
                st["step"] += 1
                x.lerp_(z, 1.0 / float(st["step"]))
                torch.lerp(x, z, 1 - beta, out=p)      # y = beta x + (1 - beta) z, in one pass
        return loss

    @contextmanager
    def average(self):
        tracked = list(self._tracked())
        with torch.no_grad():
            for _, p, st in tracked:
                if "y" in st:
                    st["y"].copy_(p)
                else:
                    st["y"] = p.detach().clone()
                p.copy_(st["x"])
        try:
            yield
        finally:
            with torch.no_grad():
                for _, p, st in tracked:
                    p.copy_(st["y"])

    def iterates(self, p: torch.Tensor) -> list[torch.Tensor]:
        st = self.state.get(p)
        return [st["z"], st["x"]] if st else []

    @torch.no_grad()
    def finish(self) -> None:
        for _, p, st in self._tracked():
            p.copy_(st["x"])

    @torch.no_grad()
    def restore_training_point(self) -> None:
        for _, p, st in self._tracked():
            if "y" in st:
                p.copy_(st["y"])
