import math

import pytest
import torch
from torch import nn

import zspace
from zspace import VAE, Autoencoder, AutoencoderConfig, ConfigError, VAEConfig
from zspace.evaluation import evaluate_likelihood, importance_sampled_log_likelihood

from .conftest import tiny_config


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-fixed", "gaussian-learned"])
def test_vae_shapes(arch, likelihood):
    cfg = VAEConfig(input_shape=(1, 8, 8), latent_dim=3, architecture=arch, hidden=(16,),
                    channels=(4, 8), likelihood=likelihood)
    m = VAE(cfg)
    x = torch.rand(5, 1, 8, 8).round()
    q = m.encode(x)
    assert q.mean.shape == (5, 3)
    p = m.decode(q.rsample(7))                       # (7, 5, 3) -> leading dims kept
    assert p.log_prob(x).shape == (7, 5)
    out = m.loss(x)
    assert out.loss.shape == () and set(out.terms) == {"elbo", "rec", "kl"}
    assert all(v.shape == (5,) for v in out.terms.values())
    assert m.sample(4).shape == (4, 1, 8, 8) and m.reconstruct(x).shape == x.shape
    assert m.embed(x).shape == (5, 3)


def test_vae_on_vectors():
    m = VAE(VAEConfig(input_shape=(6,), latent_dim=2, hidden=(8,), likelihood="gaussian-learned"))
    out = m.loss(torch.randn(4, 6))
    assert torch.isfinite(out.loss) and m.sample(3).shape == (3, 6)


def test_beta_scales_only_the_kl():
    torch.manual_seed(0)
    m = VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,)))
    x = torch.rand(6, 1, 8, 8).round()
    losses = {}
    for beta in (1.0, 4.0):
        m.config = m.config.replace(beta=beta)
        torch.manual_seed(1)
        losses[beta] = m.loss(x)
    kl = losses[1.0].terms["kl"].mean()
    assert (losses[4.0].loss - losses[1.0].loss).item() == pytest.approx(3 * kl.item(), rel=1e-5)
    torch.manual_seed(1)
    assert (m.loss(x, warmup=0.0).loss + losses[1.0].terms["rec"].mean()).abs() < 1e-5


def _constant_decoder_vae(d=5, bias=0.3):
    """q(z|x) = N(0, I) = p(z) and p(x|z) independent of z: log w = log p(x) exactly."""
    cfg = VAEConfig(input_shape=(d,), latent_dim=2, hidden=(4,))
    m = VAE(cfg)
    for p in m.parameters():
        nn.init.zeros_(p)
    nn.init.constant_(m.decoder[-1].bias, bias)
    return m


def test_importance_sampled_estimate_known_answer_any_chunking():
    m = _constant_decoder_vae()
    x = torch.tensor([[1.0, 0, 1, 1, 0], [0, 0, 0, 0, 0]])
    p1 = torch.sigmoid(torch.tensor(0.3))
    exact = (x * torch.log(p1) + (1 - x) * torch.log(1 - p1)).sum(1).double()
    for k, max_elements in ((1, 1 << 20), (50, 1 << 20), (50, 7)):   # 7: one sample per chunk
        est = importance_sampled_log_likelihood(m, x, k, max_elements=max_elements)
        assert torch.allclose(est, exact, atol=1e-5)


def test_importance_sampled_bound_is_above_elbo_and_rises_with_k(digits):
    run = zspace.train("vae", digits, config=tiny_config(epochs=3), progress=False, figures=False,
                       latent_dim=4, hidden=(32,))
    x = next(iter(run.loader("test", batch_size=200).epoch(0))).x
    torch.manual_seed(0)
    rec, kl = run.model.elbo_terms(x)
    elbo = (rec - kl).mean().item()
    bounds = []
    for k in (1, 10, 200):
        torch.manual_seed(0)
        bounds.append(importance_sampled_log_likelihood(run.model, x, k).mean().item())
    assert bounds[0] == pytest.approx(elbo, abs=1.0)      # k = 1 is an ELBO estimate
    assert bounds[0] < bounds[1] < bounds[2]
    assert bounds[2] > elbo


def test_likelihood_report_units(digits):
    m = VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=2, hidden=(8,)))
    loader = zspace.BatchLoader(digits.test.head(20), 10, zspace.Preprocessing("dynamic-binarize"),
                                shuffle=False)
    rep = evaluate_likelihood(m, loader.epoch(0), num_samples=5)
    assert rep.num_examples == 20 and rep.num_dims == 64
    assert rep.bits_per_dim == pytest.approx(rep.nll / 64 / math.log(2))
    assert rep.elbo == pytest.approx(rep.rec - rep.kl)


def test_bits_per_dim_dequantized_offset():
    # A uniform density on [0,1)^D has NLL 0; on the 8-bit grid that is exactly 8 bits/dim.
    assert zspace.bits_per_dim(0.0, 10, math.log(256)) == pytest.approx(8.0)
    with pytest.raises(ConfigError):
        zspace.bits_per_dim(1.0, 0)


def test_iwae_objective_is_exact_when_the_weights_are_constant():
    # q = prior and p(x|z) free of z: every importance weight is p(x), so the bound is log p(x).
    m = _constant_decoder_vae()
    m.config = m.config.replace(iw_samples=5)
    x = torch.tensor([[1.0, 0, 1, 1, 0]])
    p1 = torch.sigmoid(torch.tensor(0.3))
    exact = 3 * torch.log(p1) + 2 * torch.log(1 - p1)
    out = m.loss(x)
    assert set(out.terms) == {"iwae", "elbo", "kl"}
    assert out.loss.item() == pytest.approx(-exact.item(), abs=1e-5)


def test_iwae_training_bound_beats_the_elbo_on_average(digits):
    torch.manual_seed(0)
    m = VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,), iw_samples=20))
    x = torch.bernoulli(torch.from_numpy(digits.test.x[:300]).float() / 255)
    out = m.loss(x)
    assert out.terms["iwae"].mean() > out.terms["elbo"].mean() + 0.1


@pytest.mark.parametrize("kwargs, message", [
    (dict(latent_dim=0), "latent_dim"),
    (dict(latent_dim=2.5), "latent_dim"),
    (dict(beta=-1.0), "beta"),
    (dict(iw_samples=0), "iw_samples"),
    (dict(iw_samples=5, beta=2.0), "beta = 1"),
    (dict(likelihood="poisson"), "likelihood"),
    (dict(architecture="rnn"), "architecture"),
    (dict(architecture="conv", input_shape=(10,)), "image inputs"),
    (dict(activation="swishy"), "activation"),
    (dict(variance=0.0), "variance"),
    (dict(input_shape=(0, 3)), "input_shape"),
])
def test_bad_vae_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        VAE(VAEConfig(**{"input_shape": (1, 8, 8), **kwargs}))


def test_injected_networks_are_used_and_checked():
    enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 6))
    dec = nn.Linear(3, 64)
    m = VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=3), encoder=enc, decoder=dec)
    assert m.encoder is enc and m.loss(torch.rand(2, 1, 8, 8).round()).loss.isfinite()
    with pytest.raises(ConfigError, match="encoder must return"):
        VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=4), encoder=enc, decoder=nn.Linear(4, 64))
    with pytest.raises(ConfigError, match="decoder must return 64"):
        VAE(VAEConfig(input_shape=(1, 8, 8), latent_dim=3), encoder=enc, decoder=nn.Linear(3, 10))


def test_autoencoder_shares_the_building_blocks():
    for arch in ("mlp", "conv"):
        ae = Autoencoder(AutoencoderConfig(input_shape=(1, 8, 8), latent_dim=3, architecture=arch,
                                           hidden=(16,), channels=(4,), reconstruction_loss="bce"))
        x = torch.rand(3, 1, 8, 8)
        out = ae.loss(x)
        assert set(out.terms) == {"bce", "mse", "code_zero_fraction"} and ae.embed(x).shape == (3, 3)
        assert ae.reconstruct(x).min() >= 0 and ae.reconstruct(x).max() <= 1
