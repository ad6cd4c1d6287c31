"""A VQ-VAE and an autoregressive prior over its code grids, as one model.

    p(x) ~ decode(codes),  codes ~ PixelCNN prior over (1, h, w) grids of K-way codes

The VQ-VAE (trained first, frozen here) turns images into code grids; the prior - a (gated)
PixelCNN with a K-way categorical head, or a causal transformer over the tiles
(models/tile_transformer.py) - is the model that trains, on the grids. Its exact
likelihood is of code grids (bits per code), and ``sample`` draws grids and decodes them
to images, so every command that samples works unchanged. Both networks' weights live in
the one checkpoint: the run needs no other folder to sample or evaluate.
``zspace.prior.train_prior`` builds it from a VQ-VAE run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .base import MODELS, Losses, Model, ModelConfig, register
from .capabilities import ExactLikelihood, SamplesFromPrior
from .policies import LikelihoodMeaning
from .vqvae import VQVAE, VQVAEConfig

PRIOR_MODELS = ("pixelcnn", "gated-pixelcnn", "tile-transformer")


def code_grid_meaning(levels: int) -> LikelihoodMeaning:
    return LikelihoodMeaning("probability", 0.0, f"NLL of the VQ-VAE's code grids over {levels} codes; bits per code")


@dataclass(frozen=True)
class VQPriorConfig(ModelConfig):
    vqvae: dict = field(default_factory=dict)     # the VQ-VAE's config (frozen weights)
    prior_model: str = "gated-pixelcnn"            # "pixelcnn", "gated-pixelcnn" or "tile-transformer"
    prior: dict = field(default_factory=dict)     # its config: categorical head over the K codes

    @classmethod
    def resolve(cls, options: dict) -> dict:
        if "input_shape" in options:              # given by name to `train`, as a model of the data
            raise ConfigError("a VQ-VAE prior is trained on a VQ-VAE run's codes: use "
                              "`zspace train prior VQVAE_RUN` (zspace.prior.train_prior)")
        return options

    def __post_init__(self):
        if self.prior_model not in PRIOR_MODELS:
            raise ConfigError(f"prior_model must be one of {', '.join(PRIOR_MODELS)}, got {self.prior_model!r}")
        vq = VQVAEConfig.from_dict(self.vqvae)
        grid = (1, *VQVAE.grid_of(vq))
        prior = MODELS[self.prior_model].config_class.from_dict(
            {"head": "categorical", "levels": vq.num_codes, "input_shape": grid, **self.prior})
        if prior.head != "categorical" or prior.levels != vq.num_codes or tuple(prior.input_shape) != grid:
            raise ConfigError(f"the prior must be a categorical over the {vq.num_codes} codes on {grid} grids, "
                              f"got head {prior.head!r}, {prior.levels} levels, shape {tuple(prior.input_shape)}")
        # stored normalised, so a JSON round trip gives an equal config
        object.__setattr__(self, "vqvae", vq.to_dict())
        object.__setattr__(self, "prior", prior.to_dict())

    @property
    def input_shape(self) -> tuple[int, ...]:
        """What the model reads: code grids (1, h, w)."""
        return tuple(self.prior["input_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.prior.get("num_classes", 0))


@register
class VQPrior(Model, ExactLikelihood, SamplesFromPrior):
    """A VQ-VAE with a (gated) PixelCNN or transformer prior over its code grids, sampled as images."""

    name = "vqvae-prior"
    config_class = VQPriorConfig
    integer_inputs = True                     # code indices, 8-bit

    def __init__(self, config: VQPriorConfig):
        super().__init__(config)
        cls = MODELS[config.prior_model]     # built first: its initial weights are a named model's
        self.prior: Model = cls(cls.config_class.from_dict(config.prior))
        self.vqvae = VQVAE(VQVAEConfig.from_dict(config.vqvae))
        self.vqvae.requires_grad_(False)      # trained first; only the prior learns here
        self.vqvae.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.vqvae.eval()                     # its EMA codebook never moves here
        return self

    @property
    def likelihood_name(self) -> str:
        return "categorical"

    def likelihood_meaning(self, preprocessing: str) -> LikelihoodMeaning:
        return code_grid_meaning(self.vqvae.num_codes)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.vqvae.config.input_shape)

    def describe(self) -> str:
        return self.prior.describe()

    def check_data(self, data) -> None:
        self.prior.check_data(data)

    def forward(self, x, y=None, warmup: float = 1.0) -> Losses:
        """The prior's losses on code grids x (B, 1, h, w) of integers."""
        return self.prior(x, y, warmup)

    def log_prob(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """Exact log p(codes) in nats per grid, (B,)."""
        return self.prior.log_prob(x, y)

    @torch.no_grad()
    def sample_codes(self, n: int, y=None) -> torch.Tensor:
        """n code grids (n, 1, h, w) drawn from the prior."""
        return self.prior.sample(n, y=y)

    @torch.no_grad()
    def sample(self, n: int, y=None) -> torch.Tensor:
        """n images: code grids drawn from the prior, decoded by the VQ-VAE."""
        return self.vqvae.decode_codes(self.sample_codes(n, y)[:, 0])
