from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.compute import resolve_device
from ..errors import ConfigError
from ..models.base import ModelConfig, check_positive, check_positive_int
from .loggers import parse_log_to

LR_SCHEDULES = ("constant", "cosine", "exponential")
OPTIMIZERS = ("adam", "adamw", "sgd", "signum")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig(ModelConfig):
    epochs: int | None = 10
    steps: int | None = None          # if set, stop after this many optimiser steps instead
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: str = "cosine"       # decays to lr * lr_final_fraction over the run
    lr_final_fraction: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float | None = None    # max global gradient norm
    kl_warmup_epochs: float = 0.0     # linear warm-up of the KL weight (Bowman et al. 2016) or sparsity penalty
    seed: int = 0
    eval_every: int = 1               # epochs between evaluations on the test split
    eval_limit: int | None = None     # examples used by the per-epoch evaluation (None: all)
    threads: int | None = None        # torch intra-op threads (None: min(cores, 4)); bit-exact needs the same
    workers: int = 0                  # loader processes reading/decoding batches (same batches as 0)
    device: str = "cpu"
    optimizer: str = "adam"           # adam (L2 weight decay), adamw (decoupled), sgd, signum (schedule-free sign descent)
    momentum: float = 0.9             # sgd; signum: the schedule-free interpolation beta
    beta1: float = 0.9                # adam/adamw
    beta2: float = 0.999
    eval_every_steps: int | None = None        # also evaluate every N optimiser steps
    checkpoint_every_steps: int | None = None  # also checkpoint every N optimiser steps
    precision: str = "fp32"           # bf16: autocast around the training loss; evaluation stays fp32
    log_to: str = "auto"              # besides metrics.csv: auto, none, or tensorboard,mlflow,wandb (loggers.py)

    def __post_init__(self):
        if self.epochs is None and self.steps is None:
            raise ConfigError("give a number of epochs or of steps")
        if self.epochs is not None:
            check_positive_int("epochs", self.epochs)
        if self.steps is not None:
            check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        check_positive("lr", self.lr)
        check_positive_int("eval_every", self.eval_every)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}")
        if not 0 < self.lr_final_fraction <= 1:
            raise ConfigError(f"lr_final_fraction must be in (0, 1], got {self.lr_final_fraction}")
        if self.weight_decay < 0 or not math.isfinite(self.weight_decay):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None:
            check_positive("grad_clip", self.grad_clip)
        if not (math.isfinite(self.kl_warmup_epochs) and self.kl_warmup_epochs >= 0):
            raise ConfigError(f"kl_warmup_epochs must be a finite number >= 0, got {self.kl_warmup_epochs}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an integer in [0, 2^32), got {self.seed!r}")
        self.torch_device()
        if self.eval_limit is not None:
            check_positive_int("eval_limit", self.eval_limit)
        if self.threads is not None:
            check_positive_int("threads", self.threads)
        check_positive_int("workers", self.workers, minimum=0)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("momentum", "beta1", "beta2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ConfigError(f"{name} must be a number in [0, 1), got {v!r}")
        parse_log_to(self.log_to)
        for name in ("eval_every_steps", "checkpoint_every_steps"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))

    def torch_device(self) -> torch.device:
        """The device, checked: a name torch knows and hardware this machine has."""
        return resolve_device(self.device)

    def lr_at(self, step: int, total_steps: int) -> float:
        """Learning rate for optimiser step ``step`` (0-based) of ``total_steps``."""
        t = min(step / max(total_steps, 1), 1.0)
        if self.lr_schedule == "constant":
            return self.lr
        if self.lr_schedule == "exponential":
            return self.lr * self.lr_final_fraction ** t
        lo = self.lr * self.lr_final_fraction
        return lo + 0.5 * (self.lr - lo) * (1 + math.cos(math.pi * t))
