"""What every zspace model shares: a frozen config, named loss terms, a registry.

The trainer, checkpoints and CLI only use this interface, so a new model family
(PixelCNN, VQ-VAE, sparse autoencoder) plugs in by subclassing :class:`Model` and
registering its config and class.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.config import ModelConfig, check_positive, check_positive_int  # noqa: F401  (re-exported)
from ..data.corruptions import Mutation
from ..errors import ConfigError, DataError
from . import policies
from .losses import Losses, Statistic  # noqa: F401  (re-exported)


class Model(nn.Module):
    """Base class: ``forward(x, y, warmup) -> Losses`` is all the trainer needs.

    ``warmup`` in [0, 1] is the progress of an optional warm-up of regularisation
    terms (the KL of a VAE); models without such a term ignore it. A family implements
    ``forward`` (so ``model(x)`` and ``DDP(model)(x)`` give the losses; ``loss`` is an
    alias) and declares its capabilities (``models.capabilities``) as base classes.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    integer_inputs: ClassVar[bool] = False   # True for models of 8-bit integers (autoregressive heads)
    warms_up: ClassVar[bool] = False         # forward scales a regulariser by ``warmup`` (kl_warmup_epochs applies)
    custom_networks: bool = False            # injected encoder/decoder: config.json cannot rebuild it

    def __init__(self, config):
        super().__init__()
        self.config = config

    @property
    def num_classes(self) -> int:
        """> 0: class-conditional, labels 0..num_classes-1 (the config's ``num_classes``)."""
        return int(getattr(self.config, "num_classes", 0) or 0)

    @property
    def num_dims(self) -> int:
        return int(math.prod(self.config.input_shape))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, warmup: float = 1.0) -> Losses:
        """The losses of a batch x (B, *input_shape) with labels y (B,) or None."""
        raise NotImplementedError

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None, warmup: float = 1.0) -> Losses:
        """``forward`` under its old name (the same call, hooks included)."""
        return self(x, y, warmup)

    # ---- policies the model owns ------------------------------------------------------
    @property
    def likelihood_name(self) -> str | None:
        """The distribution its likelihood is of ("bernoulli", "categorical", ...); None without one."""
        return getattr(self.config, "likelihood", None)

    def default_preprocessing(self, data) -> str:
        """The preprocessing ``train`` picks for ``data`` when none is given."""
        return policies.default_preprocessing(self.integer_inputs, self.likelihood_name, data)

    def check_preprocessing(self, preprocessing: str) -> None:
        """Raises ConfigError for preprocessing this model cannot take."""
        policies.check_preprocessing(self.integer_inputs, self.likelihood_name, self.name, preprocessing)

    def likelihood_meaning(self, preprocessing: str) -> policies.LikelihoodMeaning:
        """What this model's NLL means on data preprocessed so."""
        return policies.likelihood_meaning(self.likelihood_name, preprocessing)

    @property
    def mutation_levels(self) -> tuple[int, float]:
        """(number of levels, top value) of the inputs' value space, for input mutation."""
        return 256, 1.0

    def training_input(self, x: torch.Tensor) -> torch.Tensor:
        """x as the loss should see it: while training with ``config.input_mutation`` > 0 (Ren
        et al. 2019's background model for likelihood ratios), that fraction of dimensions is
        replaced by uniform random levels, inputs and targets alike (global RNG: checkpointed)."""
        rate = getattr(self.config, "input_mutation", 0.0)
        if not (self.training and rate > 0):
            return x
        return Mutation(rate, *self.mutation_levels)(x)

    def check_data(self, data) -> None:
        """Raises DataError if ``data`` (ArrayData) cannot feed this model beyond its shape
        (a conditional model needs labels, for instance). Called before training and use."""

    def training_callbacks(self) -> list:
        """Trainer callbacks the model needs while it trains (e.g. a sparse autoencoder's
        decoder-norm projection after every step); the trainer adds them to the user's."""
        return []

    def describe(self) -> str:
        return self.name


def checked_labels(y, n: int, num_classes: int, device, who: str) -> torch.Tensor:
    """Labels for n examples of a class-conditional model, as int64 (n,); one label is repeated."""
    if y is None:
        raise ConfigError(f"{who} is class-conditional: give the labels y (integers in [0, {num_classes}))")
    y = torch.as_tensor(y, device=device)
    if y.dim() == 0:
        y = y.expand(n)
    if y.shape != (n,) or y.is_floating_point():
        raise DataError(f"labels must be {n} integers, got shape {tuple(y.shape)} of {y.dtype}")
    # (inside torch.compile's trace the values are not known: the eager encoder pass checked them)
    if len(y) and not torch.compiler.is_compiling() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(f"labels must lie in [0, {num_classes}), found [{int(y.min())}, {int(y.max())}]")
    return y.long()


def check_labelled_data(data, num_classes: int, who: str) -> None:
    """A class-conditional model's data must carry labels within its classes."""
    if data.y is None:
        raise DataError(f"{data.name}: {who} needs labels: it needs labelled data with labels in [0, {num_classes})")
    if data.y.min() < 0 or data.y.max() >= num_classes:
        raise DataError(f"{data.name}: labels span [{data.y.min()}, {data.y.max()}] but the model "
                        f"has {num_classes} classes (--num-classes)")


MODELS: dict[str, type[Model]] = {}


def register(cls: type[Model]) -> type[Model]:
    MODELS[cls.name] = cls
    return cls


def build_model(name: str, config: dict[str, Any] | Any, copies: int = 2) -> Model:
    """The registered model ``name`` with ``config``; refused before allocating when ``copies``
    of its weights (2 to load them; 4 to train: weights, gradients, two Adam moments) would not
    fit in the memory free."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    cls = MODELS[name]
    cfg = config if isinstance(config, cls.config_class) else cls.config_class.from_dict(dict(config))
    _check_fits(cls, cfg, copies)
    return cls(cfg)


def _check_fits(cls: type[Model], cfg, copies: int) -> None:
    from ..core.io import available_memory

    free = available_memory()
    if free is None:
        return
    try:
        with torch.device("meta"):   # shapes only: nothing is allocated
            shell = cls(cfg)
    except Exception:   # a model that cannot be built on the meta device is built for real
        return
    tensors = (*shell.parameters(), *shell.buffers())
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    if nbytes * copies > free:
        raise ConfigError(f"this {cls.name} has {sum(t.numel() for t in tensors) / 1e6:,.0f}M parameters: about "
                          f"{nbytes * copies / 2**30:.1f} GiB to {'train' if copies > 2 else 'load'}, more than "
                          f"the {free / 2**30:.1f} GiB of memory free; choose a smaller model")
