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


def test_blind_gaussian_noise_draws_a_level_per_example():
    from zspace.data.corruptions import BlindGaussianNoise

    out = BlindGaussianNoise(0.4)(X, gen())
    stds = (out - X).flatten(1).std(1)
    assert stds.max() <= 0.4 * 1.05 and stds.min() < 0.05 and stds.std() > 0.05
    assert stds.mean().item() == pytest.approx(0.2, abs=0.03)   # E[U(0, 0.4)]


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


def test_psnr_and_ssim_known_values():
    from zspace.evaluation.image_quality import psnr, ssim

    x = torch.rand(3, 1, 16, 16)
    assert torch.allclose(ssim(x, x), torch.ones(3))
    y = (x + 0.1).clamp(0, 1)
    mse = ((y - x) ** 2).flatten(1).mean(1)
    assert torch.allclose(psnr(y, x), 10 * torch.log10(1 / mse))
    assert (ssim(torch.rand(3, 1, 16, 16), x) < 0.2).all()
    with pytest.raises(zspace.DataError, match="same shape"):
        psnr(x, x[:2])


def test_linear_autoencoder_recovers_pca_on_low_rank_data():
    # 6-D data on a 2-D subspace plus small noise: the linear AE's decoder must span it.
    from zspace.evaluation.probes import principal_angles_to_pca

    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(6, 2, generator=g))[0]
    x = (torch.randn(2000, 2, generator=g) * torch.tensor([3.0, 1.5])) @ basis.T + 0.01 * torch.randn(2000, 6, generator=g)
    data = zspace.ArrayData.from_arrays(x.numpy().astype("float32"))
    splits = zspace.DataSplits(data, data.head(200), "low-rank")
    run = zspace.train("ae", splits, preprocessing="none", progress=False, figures=False, preset="linear",
                       latent_dim=2, config=zspace.TrainConfig(epochs=30, batch_size=100, lr=1e-2))
    angles, _ = principal_angles_to_pca(run.model, x.numpy())
    assert angles.max() < 2.0


def test_principal_angles_need_a_linear_model():
    from zspace.evaluation.probes import principal_angles_to_pca

    m = Autoencoder(AutoencoderConfig.from_preset("basic", input_shape=(1, 8, 8), latent_dim=4))
    with pytest.raises(ConfigError, match="linear autoencoder"):
        principal_angles_to_pca(m, torch.rand(10, 64).numpy())


def test_compare_and_denoise_commands(tmp_path, capsys):
    from zspace.cli import main

    code = main(["compare", "--data", "digits", "--variants", "pca,linear,basic", "--code-size", "4",
                 "--epochs", "1", "--out", str(tmp_path / "cmp")])
    assert code == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| pca (" in table and "| linear (" in table and "noisy input" in table
    assert {p.name for p in (tmp_path / "cmp").iterdir()} >= {"comparison.csv", "reconstructions.png", "denoising.png"}
    run = tmp_path / "cmp" / "runs" / "basic"
    code = main(["denoise", str(run), "--corruption", "salt-and-pepper", "--level", "0.2",
                 "--out", str(tmp_path / "d.png")])
    out = capsys.readouterr().out
    assert code == 0 and "SSIM" in out and (tmp_path / "d.png").exists()
    assert main(["compare", "--data", "digits", "--variants", "pca,gan", "--out", str(tmp_path / "x")]) == 2
    assert "unknown variant" in capsys.readouterr().err
