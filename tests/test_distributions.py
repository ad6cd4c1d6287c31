import math

import pytest
import torch
import torch.nn.functional as F

from zspace import ConfigError
from zspace.distributions import (Bernoulli, DecoderLikelihood, DiagonalGaussian, Gaussian,
                                  standard_normal_log_prob)


def test_kl_closed_form_matches_monte_carlo():
    torch.manual_seed(0)
    q = DiagonalGaussian(torch.randn(3, 5), torch.randn(3, 5) * 0.5)
    z = q.rsample(200_000)                                       # (S, 3, 5)
    mc = (q.log_prob(z) - standard_normal_log_prob(z)).mean(0)   # E_q[log q - log p]
    assert torch.allclose(q.kl_standard_normal(), mc, atol=0.03)


def test_kl_is_zero_only_at_the_prior():
    q = DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 3))
    assert torch.allclose(q.kl_standard_normal(), torch.zeros(2))
    assert (DiagonalGaussian(torch.ones(1, 3), torch.zeros(1, 3)).kl_standard_normal() > 0).all()


def test_gaussian_log_prob_constants_known_answer():
    # N(0; 0, 1) in D dims: -D/2 log(2 pi); with variance c: -D/2 log(2 pi c).
    d = 7
    q = DiagonalGaussian(torch.zeros(1, d), torch.zeros(1, d))
    assert q.log_prob(torch.zeros(1, d)).item() == pytest.approx(-d / 2 * math.log(2 * math.pi))
    c = 0.3
    p = DecoderLikelihood("gaussian-fixed", variance=c)(torch.zeros(1, d), event_dims=1)
    x = torch.full((1, d), 0.5)
    expected = -(d * 0.25) / (2 * c) - d / 2 * math.log(2 * math.pi * c)
    assert p.log_prob(x).item() == pytest.approx(expected, rel=1e-6)
    ref = torch.distributions.Normal(0.0, math.sqrt(c)).log_prob(x).sum()
    assert p.log_prob(x).item() == pytest.approx(ref.item(), rel=1e-6)


def test_fixed_variance_weight_c_is_one_over_two_c():
    # Doubling the squared error changes log p by C = 1/(2c) times the change.
    c = 0.25
    p = DecoderLikelihood("gaussian-fixed", variance=c)(torch.zeros(1, 1), event_dims=1)
    delta = p.log_prob(torch.tensor([[1.0]])) - p.log_prob(torch.tensor([[0.0]]))
    assert delta.item() == pytest.approx(-1 / (2 * c))


def test_bernoulli_log_prob_known_answer():
    # logits 0 -> p = 1/2 for every pixel: log p(x) = -D log 2 for any binary x.
    x = torch.bernoulli(torch.full((4, 1, 3, 3), 0.5))
    b = Bernoulli(torch.zeros(4, 1, 3, 3), event_dims=3)
    assert torch.allclose(b.log_prob(x), torch.full((4,), -9 * math.log(2)))
    logits = torch.randn(2, 5)
    x = torch.bernoulli(torch.sigmoid(logits))
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    assert torch.allclose(Bernoulli(logits, 1).log_prob(x), ref, atol=1e-6)


def test_bernoulli_without_gradient_equals_the_autograd_form():
    """The evaluation path (max(l, 0) + log(1 + exp(-|l|)) - x l) against softplus - x l with
    autograd on, for grey x broadcast over a sample dimension and logits up to +-120."""
    g = torch.Generator().manual_seed(0)
    logits = torch.cat([torch.randn(3, 4, 2, 5, generator=g) * 8, torch.full((3, 4, 1, 5), 120.0),
                        torch.full((3, 4, 1, 5), -120.0)], dim=2)        # (k, B, 4, 5)
    x = torch.rand(4, 4, 5, generator=g)
    x[0] = x[0].round()
    with torch.no_grad():
        fast = Bernoulli(logits, 2).log_prob(x)
    slow = Bernoulli(logits.clone().requires_grad_(), 2).log_prob(x)
    ref = -(F.softplus(logits.double()) - x.double() * logits.double()).flatten(2).sum(-1)
    assert fast.shape == (3, 4) and torch.isfinite(fast).all()
    torch.testing.assert_close(fast.double(), ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-6, atol=1e-4)
    assert not torch.equal(fast, torch.zeros_like(fast))


def test_bernoulli_stays_finite_for_confident_logits():
    b = Bernoulli(torch.tensor([[80.0, -80.0]]), 1)
    assert torch.isfinite(b.log_prob(torch.tensor([[0.0, 1.0]]))).all()


def test_learned_variance_splits_channels():
    # (B, 2C, H, W) with C = 1: channel 0 is the mean (0.5), channel 1 the log-variance (log 0.25).
    out = torch.cat([torch.full((3, 1, 4, 4), 0.5), torch.full((3, 1, 4, 4), math.log(0.25))], dim=1)
    p = DecoderLikelihood("gaussian-learned")(out, event_dims=3)
    assert isinstance(p, Gaussian) and torch.allclose(p.mean, torch.full((3, 1, 4, 4), 0.5))
    x = torch.ones(3, 1, 4, 4)
    ref = torch.distributions.Normal(0.5, 0.5).log_prob(torch.tensor(1.0)) * 16
    assert torch.allclose(p.log_prob(x), ref.expand(3), atol=1e-5)


def test_likelihood_options_are_validated():
    with pytest.raises(ConfigError, match="unknown likelihood"):
        DecoderLikelihood("poisson")
    with pytest.raises(ConfigError, match="variance"):
        DecoderLikelihood("gaussian-fixed", variance=-1.0)


def test_rsample_is_reparameterised():
    mean = torch.zeros(2, 3, requires_grad=True)
    log_var = torch.zeros(2, 3, requires_grad=True)
    DiagonalGaussian(mean, log_var).rsample().sum().backward()
    assert mean.grad is not None and torch.all(mean.grad == 1)
    assert log_var.grad is not None
