import math

import pytest
import torch

import zspace
from zspace import Autoencoder, AutoencoderConfig, ConfigError
from zspace.data.corruptions import GaussianNoise, InputDropout, Masking, SaltAndPepper, make_corruption
from zspace.models.autoencoder import kl_sparsity

from .conftest import tiny_config

X = torch.full((200, 1, 28, 28), 0.5)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_gaussian_noise_has_the_stated_std():
    out = GaussianNoise(0.1)(X, gen())
    assert (out - X).std().item() == pytest.approx(0.1, rel=0.02)
    assert (out - X).mean().abs() < 2e-3
    assert out.min() >= 0 and out.max() <= 1          # clipped to the data range
    assert torch.equal(out, GaussianNoise(0.1)(X, gen()))
    assert not torch.equal(out, GaussianNoise(0.1)(X, gen(1)))


def test_masking_zeroes_the_stated_fraction():
    out = Masking(0.3)(X, gen())
    assert (out == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert torch.all((out == 0) | (out == X))


def test_salt_and_pepper_fraction_and_balance():
    out = SaltAndPepper(0.2)(X, gen())
    hit = out != X
    assert hit.float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert (out[hit] == 1).float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert torch.all((out[hit] == 0) | (out[hit] == 1))


def test_input_dropout_keeps_the_mean():
    out = InputDropout(0.25)(X, gen())
    assert (out == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert out.mean().item() == pytest.approx(0.5, abs=0.005)
    assert torch.allclose(out[out != 0], torch.tensor(0.5 / 0.75))


@pytest.mark.parametrize("name, level, message", [
    ("gaussian", -0.1, ">= 0"), ("masking", 1.5, r"\[0, 1\]"), ("salt-and-pepper", -0.2, r"\[0, 1\]"),
    ("dropout", 1.0, r"\[0, 1\)"), ("blur", 0.1, "unknown corruption"),
])
def test_bad_corruption_parameters(name, level, message):
    with pytest.raises(ConfigError, match=message):
        make_corruption(name, level)


def test_kl_sparsity_penalty_zero_at_target_positive_elsewhere():
    rho = 0.05
    assert kl_sparsity(rho, torch.full((32,), rho)).item() == pytest.approx(0.0, abs=1e-7)
    for other in (0.01, 0.2, 0.9):
        assert kl_sparsity(rho, torch.full((32,), other)).item() > 0
    r = 0.3
    expected = rho * math.log(rho / r) + (1 - rho) * math.log((1 - rho) / (1 - r))
    assert kl_sparsity(rho, torch.tensor([r])).item() == pytest.approx(expected, rel=1e-5)


def test_basic_preset_is_the_classic_architecture():
    m = Autoencoder(AutoencoderConfig.from_preset("basic"))
    linears = [l for l in m.modules() if isinstance(l, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(784, 32), (32, 784)]
    assert isinstance(m.code_act, torch.nn.LeakyReLU)
    out = m.reconstruct(torch.rand(2, 1, 28, 28))
    assert out.min() >= 0 and out.max() <= 1
    assert AutoencoderConfig.from_preset("basic", latent_dim=16).latent_dim == 16


def test_sparse_and_denoising_terms_and_training(digits):
    run = zspace.train("ae", digits, config=tiny_config(epochs=1), progress=False, figures=False,
                       preset="sparse-kl", latent_dim=16, hidden=(32,))
    assert {"train_mse", "train_sparsity_kl", "train_code_zero_fraction", "test_mse"} <= set(run.history()[-1])
    m = Autoencoder(AutoencoderConfig.from_preset("denoising", input_shape=(1, 8, 8), latent_dim=4,
                                                  channels=(4,)))
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(0)
    a = m.loss(x).loss
    m.eval()
    b, c = m.loss(x).loss, m.loss(x).loss
    assert b == c and a != b          # corruption only while training


@pytest.mark.parametrize("kwargs, message", [
    (dict(latent_dim=65), "larger than the input"),
    (dict(sparsity="kl", code_activation="relu"), "sigmoid codes"),
    (dict(sparsity="kl", code_activation="sigmoid", sparsity_target=1.0), r"\(0, 1\)"),
    (dict(sparsity="kl", code_activation="sigmoid", sparsity_target=0.0), r"\(0, 1\)"),
    (dict(corruption="gaussian", corruption_level=-1.0), ">= 0"),
    (dict(dropout=1.0), "dropout"),
    (dict(sparsity_weight=-1.0), "sparsity_weight"),
    (dict(preset="fancy"), "unknown preset"),
    (dict(reconstruction_loss="bce", output_activation="none"), "needs output_activation"),
])
def test_bad_autoencoder_parameters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AutoencoderConfig.from_dict({"input_shape": (1, 8, 8), **kwargs})
