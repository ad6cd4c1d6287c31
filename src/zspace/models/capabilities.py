"""What a model can do, declared by the class and tested with ``isinstance``.

A model family inherits the capabilities it has, next to :class:`~zspace.models.base.Model`
(``class VAE(Model, ImportanceSampledLikelihood, SamplesFromPrior, Reconstructs)``), so
callers ask ``isinstance(model, ExactLikelihood)`` instead of probing for methods. Each
capability is a small class naming the methods it promises; the contract test
(tests/test_contract.py) checks that every registered model keeps those promises.

    ContinuousCode               embed(x, y) -> (B, code_dim); decode_mean(z, y) -> x space
    LatentVariableModel          ... and encode(x, y) -> q(z|x) (DiagonalGaussian), decode(z, y)
                                 -> p(x|z), elbo_terms, against an N(0, I) prior
    ImportanceSampledLikelihood  ... and log_importance_weights: log p(x) by importance sampling
    ExactLikelihood              log_prob(x, y) -> (B,) nats, exact
    SamplesFromPrior             sample(n, y) -> (n, *input_shape)
    Reconstructs                 reconstruct(x, y) -> x space
    DiscreteCodes                encode_codes(x) -> (B, h, w) integers; decode_codes(codes) -> x
    Conditional                  an instance whose config has num_classes > 0 (labels required)

``Conditional`` depends on the config, not the class, so it is checked on the instance
(``isinstance(model, Conditional)`` is ``model.num_classes > 0``) and never inherited.
"""
from __future__ import annotations

import torch


class Capability:
    """Marker base: the capabilities a model declares (see ``capabilities_of``)."""


class ContinuousCode(Capability):
    """A continuous code per example that decodes back to input space."""

    @property
    def code_dim(self) -> int:
        return int(self.config.latent_dim)

    def embed(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """The code of x, (B, code_dim) (the posterior mean for a VAE)."""
        raise NotImplementedError

    def decode_mean(self, z: torch.Tensor, y=None) -> torch.Tensor:
        """Codes (B, code_dim) -> the decoder's mean in input space."""
        raise NotImplementedError


class LatentVariableModel(ContinuousCode):
    """An encoder q(z|x) and a decoder p(x|z) as distributions, with a N(0, I) prior on z."""

    def encode(self, x: torch.Tensor, y=None):
        """q(z|x[, y]): a DiagonalGaussian over (B, latent_dim)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor, y=None):
        """p(x|z[, y]): a distribution over input space (leading sample dimensions kept)."""
        raise NotImplementedError

    def elbo_terms(self, x: torch.Tensor, y=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q log p(x|z), KL(q || p(z))), each (B,) in nats."""
        raise NotImplementedError


class ImportanceSampledLikelihood(LatentVariableModel):
    """log p(x) estimated with the encoder as proposal (Burda et al. 2016)."""

    def log_importance_weights(self, x: torch.Tensor, q, k: int, y=None, eps=None) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i|x) for k samples, (k, B)."""
        raise NotImplementedError


class ExactLikelihood(Capability):
    """An exact log p(x) (autoregressive models)."""

    def log_prob(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """log p(x[|y]) in nats per example, (B,)."""
        raise NotImplementedError


class SamplesFromPrior(Capability):
    """Draws new examples: a prior over codes decoded, or pixels drawn in order."""

    def sample(self, n: int, y=None) -> torch.Tensor:
        """n samples in input space, (n, *input_shape)."""
        raise NotImplementedError


class Reconstructs(Capability):
    """Maps an input to its reconstruction through a code."""

    def reconstruct(self, x: torch.Tensor, y=None) -> torch.Tensor:
        raise NotImplementedError


class DiscreteCodes(Capability):
    """A grid of integer codes per example (VQ-VAE)."""

    num_codes: int

    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs -> code grids (B, h, w) of integers in [0, num_codes)."""
        raise NotImplementedError

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code grids (B, h, w) -> inputs."""
        raise NotImplementedError


class _OnTheInstance(type):
    def __instancecheck__(cls, obj) -> bool:
        return int(getattr(obj, "num_classes", 0) or 0) > 0


class Conditional(metaclass=_OnTheInstance):
    """``isinstance(model, Conditional)``: the model is class-conditional (num_classes > 0),
    so every call that takes inputs or samples needs labels y in [0, num_classes)."""


CAPABILITIES = (ContinuousCode, LatentVariableModel, ImportanceSampledLikelihood, ExactLikelihood,
                SamplesFromPrior, Reconstructs, DiscreteCodes, Conditional)


def capabilities_of(model) -> tuple[str, ...]:
    """The names of the capabilities ``model`` has, e.g. ('ExactLikelihood', 'SamplesFromPrior')."""
    return tuple(c.__name__ for c in CAPABILITIES if isinstance(model, c))
