"""The importance-sampled NLL estimator against a plain reference: one sample at a time, the
densities written out in float64, log-sum-exp by NumPy. Same draws (eps), so the two must
agree to float tolerance; and chunking keeps memory bounded for any k."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zspace import VAE, VAEConfig
from zspace.distributions import Bernoulli
from zspace.evaluation import importance_sampled_log_likelihood
from zspace.evaluation import likelihood as likelihood_module
from zspace.models.vae import CVAE, CVAEConfig

LOG_2PI = math.log(2 * math.pi)


def _reference_log_px_z(model, z, x, y):
    """log p(x|z) in float64 from the decoder's raw output, (B,), for one sample z (B, D)."""
    c = model.config
    out = model.decoder(z if y is None else torch.cat([z, F.one_hot(y, model.num_classes).float()], 1)).double()
    x = x.double().reshape(len(x), -1)
    if c.likelihood == "bernoulli":
        l = out.reshape(len(x), -1)
        return (x * F.logsigmoid(l) + (1 - x) * F.logsigmoid(-l)).sum(1)
    if c.likelihood == "gaussian-fixed":
        mu = out.reshape(len(x), -1)
        return (-0.5 * (x - mu) ** 2 / c.variance - 0.5 * math.log(2 * math.pi * c.variance)).sum(1)
    if c.likelihood == "gaussian-learned":
        mu, lv = out.reshape(len(x), 2, -1).unbind(1)    # the channel halves, flattened
        lv = lv.clamp(-9.0, 5.0)
        return (-0.5 * ((x - mu) ** 2 / lv.exp() + lv + LOG_2PI)).sum(1)
    raise AssertionError(c.likelihood)


@torch.no_grad()
def reference_log_likelihood(model, x, eps, y=None):
    """log 1/k sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i = mean + std eps_i, one i at a time."""
    q = model.encode(x, y)
    mean, log_var = q.mean.double(), q.log_var.double()
    log_w = []
    for e in eps.double():                                              # (B, D) per sample
        z = mean + torch.exp(0.5 * log_var) * e
        if model.config.likelihood == "logistic":                      # its own float32 density
            log_px = model.decode(z.float(), y).log_prob(x).double()
        else:
            log_px = _reference_log_px_z(model, z.float(), x, y)
        log_pz = (-0.5 * (z ** 2 + LOG_2PI)).sum(1)
        log_qz = (-0.5 * ((z - mean) ** 2 / log_var.exp() + log_var + LOG_2PI)).sum(1)
        log_w.append((log_px + log_pz - log_qz).numpy())
    log_w = np.stack(log_w)                                             # (k, B)
    top = log_w.max(0)
    return top + np.log(np.exp(log_w - top).mean(0))


def _model(likelihood, arch="mlp", conditional=False):
    torch.manual_seed(0)
    opts = dict(input_shape=(1, 8, 8), latent_dim=3, architecture=arch, hidden=(16, 12), channels=(4, 8),
                likelihood=likelihood, variance=0.3, mixtures=2 if likelihood == "logistic" else 1)
    m = CVAE(CVAEConfig(num_classes=3, **opts)) if conditional else VAE(VAEConfig(**opts))
    with torch.no_grad():                     # sharper decoders than at init, so the terms are not all alike
        for p in m.decoder.parameters():
            p.mul_(3.0)
    return m.eval()


def _data(likelihood, n=6):
    g = torch.Generator().manual_seed(1)
    u = torch.rand(n, 1, 8, 8, generator=g)
    if likelihood == "bernoulli":
        return u.round()
    if likelihood == "logistic":
        return torch.round(u * 255) / 255
    return u


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-fixed", "gaussian-learned", "logistic"])
@pytest.mark.parametrize("arch,conditional", [("mlp", False), ("conv", False), ("mlp", True)])
def test_estimator_equals_reference_for_every_decoder_likelihood(likelihood, arch, conditional):
    m = _model(likelihood, arch, conditional)
    x = _data(likelihood)
    y = torch.tensor([0, 1, 2, 0, 1, 2]) if conditional else None
    k = 37
    eps = torch.randn(k, len(x), 3, generator=torch.Generator().manual_seed(2))
    want = reference_log_likelihood(m, x, eps, y)
    for max_elements in (1 << 20, 200):          # one chunk; chunks of a few samples
        got = importance_sampled_log_likelihood(m, x, k, max_elements=max_elements, y=y, eps=eps)
        assert got.dtype == torch.float64 and got.shape == (len(x),)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("likelihood,arch,conditional", [("bernoulli", "mlp", False), ("logistic", "conv", False),
                                                       ("gaussian-learned", "mlp", True)])
def test_compiled_estimator_equals_reference_and_the_eager_path(likelihood, arch, conditional):
    """The torch.compile path (chosen by default for large k) gives the reference's estimate, and
    with the same seed the eager path's: the draws are made outside the compiled code."""
    m, x = _model(likelihood, arch, conditional), _data(likelihood)
    y = torch.tensor([0, 1, 2, 0, 1, 2]) if conditional else None
    eps = torch.randn(37, len(x), 3, generator=torch.Generator().manual_seed(2))
    got = importance_sampled_log_likelihood(m, x, 37, max_elements=200, y=y, eps=eps, compile=True)
    np.testing.assert_allclose(got.numpy(), reference_log_likelihood(m, x, eps, y), rtol=1e-5, atol=1e-3)
    torch.manual_seed(5)
    a = importance_sampled_log_likelihood(m, x, 11, y=y, compile=True)
    torch.manual_seed(5)
    b = importance_sampled_log_likelihood(m, x, 11, y=y, compile=False)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-4)
    assert likelihood_module._compile_state["failed"] is None


def test_estimator_falls_back_to_eager_when_compiling_fails(monkeypatch):
    """A compiler failure (no C++ compiler, say) warns once and gives the eager estimate."""
    tries = []

    def broken(*args):
        tries.append(1)
        raise RuntimeError("InductorError: no working C++ compiler found")
    monkeypatch.setattr(likelihood_module, "_compile_state", {"fn": broken, "failed": None})
    m, x = _model("bernoulli"), _data("bernoulli")
    eps = torch.randn(9, len(x), 3, generator=torch.Generator().manual_seed(4))
    with pytest.warns(RuntimeWarning, match="no working C.. compiler"):
        got = importance_sampled_log_likelihood(m, x, 9, max_elements=200, eps=eps, compile=True)
    np.testing.assert_allclose(got.numpy(), reference_log_likelihood(m, x, eps), rtol=1e-5, atol=1e-3)
    assert "RuntimeError" in likelihood_module._compile_state["failed"] and len(tries) == 1   # not per chunk
    again = importance_sampled_log_likelihood(m, x, 9, max_elements=200, eps=eps, compile=True)   # no second try
    assert torch.equal(again, got)


def test_large_estimates_choose_the_compiled_path(monkeypatch):
    calls = []
    monkeypatch.setattr(likelihood_module, "_run_chunk", lambda step, *a: calls.append(step) or
                        likelihood_module._chunk_log_sum(*a))
    m, x = _model("bernoulli"), _data("bernoulli")
    importance_sampled_log_likelihood(m, x, 5)
    assert calls[-1] is likelihood_module._chunk_log_sum
    monkeypatch.setattr(likelihood_module, "COMPILE_MIN_ELEMENTS", 5 * len(x) * 64)
    importance_sampled_log_likelihood(m, x, 5)
    assert calls[-1] is not likelihood_module._chunk_log_sum


def test_estimator_draws_from_the_global_rng_like_rsample():
    """Without eps the draws are torch.randn((k, B, D)) per chunk, so a seed fixes the estimate."""
    m, x, k = _model("bernoulli"), _data("bernoulli"), 11
    torch.manual_seed(5)
    got = importance_sampled_log_likelihood(m, x, k)
    torch.manual_seed(5)
    eps = torch.randn(k, len(x), 3)
    np.testing.assert_allclose(got.numpy(), reference_log_likelihood(m, x, eps), rtol=1e-5, atol=1e-3)


def test_bernoulli_log_prob_is_minus_bce_for_extreme_logits_and_soft_targets():
    l = torch.tensor([[-200.0, -30.0, -1e-3, 0.0, 2.5, 30.0, 200.0]]).repeat(4, 1)      # (4, 7)
    x = torch.tensor([0.0, 1.0, 0.25, 0.5, 1.0, 0.0, 1.0])                               # broadcasts over 4
    got = Bernoulli(l, event_dims=1).log_prob(x)
    want = -F.binary_cross_entropy_with_logits(l.double(), x.double().expand(4, 7), reduction="none").sum(1)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.double().numpy(), want.numpy(), rtol=1e-6)


def test_estimator_memory_is_bounded_for_large_k():
    """k = 20,000 samples through the decoder in chunks: no decoder call sees more than
    max_elements output values, and the estimate equals one computed in a single chunk."""
    m, x = _model("bernoulli"), _data("bernoulli", n=4)
    k, max_elements = 20_000, 64 * 4 * 64        # 64 samples of 4 images x 64 pixels per chunk
    rows = []
    m.decoder.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    eps = torch.randn(k, len(x), 3, generator=torch.Generator().manual_seed(3))
    got = importance_sampled_log_likelihood(m, x, k, max_elements=max_elements, eps=eps)
    assert max(rows) * 64 <= max_elements and sum(rows) == k * len(x) and len(rows) >= k // 64
    rows.clear()
    whole = importance_sampled_log_likelihood(m, x, k, max_elements=k * len(x) * 64, eps=eps)
    assert len(rows) == 1
    np.testing.assert_allclose(got.numpy(), whole.numpy(), rtol=1e-9, atol=1e-6)


def test_iwae_gradient_unchanged_by_the_eps_form_of_log_q():
    """log p(z) - log q(z|x) written with eps has the gradient of the densities written with z."""
    m, x = _model("bernoulli"), _data("bernoulli")
    m.train()
    eps = torch.randn(5, len(x), 3, generator=torch.Generator().manual_seed(4))
    q = m.encode(x)
    fast = m.log_importance_weights(x, q, 5, eps=eps).sum()
    grads = torch.autograd.grad(fast, list(m.encoder.parameters()))
    q = m.encode(x)
    z = q.mean + q.std * eps
    slow = (m.decode(z).log_prob(x) + (-0.5 * (z ** 2 + LOG_2PI)).sum(-1) - q.log_prob(z)).sum()
    for a, b in zip(grads, torch.autograd.grad(slow, list(m.encoder.parameters()))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert torch.allclose(fast, slow, rtol=1e-5)
