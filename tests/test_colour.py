"""Colour images: residual encoders/decoders, the discretized logistic decoder (exact 8-bit
probabilities), colour evaluation and figures, and non-square (Frey 28x20) latent figures."""
import json
import math

import numpy as np
import pytest
import torch

import zspace
from zspace import ConfigError
from zspace.cli import main
from zspace.distributions import DecoderLikelihood, DiscretizedLogistic
from zspace.nn import ResNetDecoder, ResNetEncoder

SHAPES = [(3, 32, 32), (3, 64, 64), (1, 28, 20)]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("shape", SHAPES)
def test_resnet_shapes(shape):
    enc = ResNetEncoder(shape, (8, 16), 10, blocks=1)
    dec = ResNetDecoder(4, (8, 16), (2 * shape[0], *shape[1:]), blocks=2)
    assert enc(torch.zeros(3, *shape)).shape == (3, 10)
    assert dec(torch.zeros(3, 4)).shape == (3, 2 * shape[0], *shape[1:])
    vae = zspace.VAE(zspace.VAEConfig(input_shape=shape, architecture="resnet", channels=(8, 16), latent_dim=3,
                                      likelihood="logistic"))
    x = torch.randint(0, 256, (2, *shape)).float() / 255
    assert vae.sample(2).shape == (2, *shape) and vae.reconstruct(x).shape == (2, *shape)
    vae(x).loss.backward()


def test_resnet_in_every_family():
    shape = (3, 16, 16)
    x = torch.rand(2, *shape)
    cvae = zspace.CVAE(zspace.CVAEConfig(input_shape=shape, architecture="resnet", channels=(8,), latent_dim=3,
                                         num_classes=3, likelihood="gaussian-learned"))
    assert cvae.sample(2, y=torch.tensor([0, 2])).shape == (2, *shape)
    cvae(x, torch.tensor([1, 2])).loss.backward()
    ae = zspace.Autoencoder(zspace.AutoencoderConfig(input_shape=shape, architecture="resnet", channels=(8, 16),
                                                     blocks=0, norm="batch", latent_dim=8))
    assert ae.reconstruct(x).shape == (2, *shape)
    from zspace.models.networks import build_spatial_decoder, build_spatial_encoder
    cfg = zspace.VAEConfig(input_shape=(3, 64, 64), architecture="resnet", channels=(8, 16, 16))
    grid = build_spatial_encoder(cfg, 5)(torch.zeros(1, 3, 64, 64))
    assert grid.shape == (1, 5, 8, 8)                       # an 8x8 code grid for a VQ-VAE
    assert build_spatial_decoder(cfg, 5)(grid).shape == (1, 3, 64, 64)


def test_resnet_refuses_bad_configs_in_one_line():
    for kw in (dict(input_shape=(3, 30, 30), channels=(8, 16)), dict(input_shape=(784,)),
               dict(input_shape=(3, 32, 32), norm="layer"), dict(input_shape=(3, 32, 32), blocks=-1)):
        with pytest.raises(ConfigError) as e:
            zspace.VAEConfig(architecture="resnet", **kw)
        assert "\n" not in str(e.value)


def test_mlp_and_conv_keep_their_state_dict_keys():
    conv = zspace.VAE(zspace.VAEConfig(input_shape=(1, 28, 28), architecture="conv", latent_dim=2))
    assert sorted(conv.state_dict()) == sorted(
        ["encoder.features.0.weight", "encoder.features.0.bias", "encoder.features.2.weight",
         "encoder.features.2.bias", "encoder.head.weight", "encoder.head.bias", "decoder.head.weight",
         "decoder.head.bias", "decoder.body.1.weight", "decoder.body.1.bias", "decoder.body.3.weight",
         "decoder.body.3.bias"])
    mlp = zspace.VAE(zspace.VAEConfig(latent_dim=2, hidden=(8,)))
    assert list(mlp.state_dict()) == ["encoder.1.weight", "encoder.1.bias", "encoder.3.weight", "encoder.3.bias",
                                      "decoder.1.weight", "decoder.1.bias", "decoder.3.weight", "decoder.3.bias"]


def _brute_force_log_probs(params, k):
    """log P(level) for every level 0..255 from the formula, float64: (256, C, H, W)."""
    if k == 1:
        params = torch.cat([torch.zeros_like(params[:, :1]), params], 1)
    logits, mu, log_s = (t[0].double() for t in params.split(k, dim=1))    # (K, C, H, W)
    s = torch.exp(log_s.clamp(min=-7.0))
    w = torch.softmax(logits, 0)
    rows = []
    for level in range(256):
        v = 2 * level / 255 - 1
        a, b = (v + 1 / 255 - mu) / s, (v - 1 / 255 - mu) / s
        if level == 0:
            mass = torch.sigmoid(a)
        elif level == 255:
            mass = torch.sigmoid(-b)
        else:   # sigma(a) - sigma(b), written on the side of 0 where it does not cancel
            mass = torch.where(b > 0, torch.sigmoid(-b) - torch.sigmoid(-a), torch.sigmoid(a) - torch.sigmoid(b))
        rows.append(torch.log((w * mass).sum(0)))
    return torch.stack(rows)


@pytest.mark.parametrize("k", [1, 3])
def test_discretized_logistic_is_a_distribution_over_8_bit_values(k):
    torch.manual_seed(0)
    c = 3
    p = 2 if k == 1 else 3 * k
    out = torch.randn(1, p * c, 2, 2) * 2
    out[:, (p - 1) * c:] -= 2.0                                  # some sharp log-scales
    dist = DecoderLikelihood("logistic", mixtures=k)(out.expand(256, -1, -1, -1), event_dims=3)
    levels = torch.arange(256, dtype=torch.float32)[:, None, None, None].expand(256, c, 2, 2) / 255
    per = dist.log_prob_per_subpixel(levels).double()             # (256, C, 2, 2): level i in row i
    assert torch.allclose(torch.logsumexp(per, 0), torch.zeros(c, 2, 2, dtype=torch.float64), atol=1e-5)
    brute = _brute_force_log_probs(out.reshape(1, p, c, 2, 2), k)
    fine = brute > -40                                           # float64 resolves these bins' masses
    assert fine.float().mean() > 0.5
    assert torch.allclose(per[fine], brute[fine], atol=1e-4, rtol=1e-4)
    # the NLL of an image is the sum of its subpixels' brute-force log-probabilities
    x = torch.randint(0, 256, (c, 2, 2))
    one = DiscretizedLogistic(out, 3, k).log_prob(x[None].float() / 255)
    want = brute.gather(0, x[None]).sum()
    assert float(one[0]) == pytest.approx(float(want), rel=1e-5)
    # samples are levels k/255 and the mean lies in [0, 1]
    s, m = dist.sample(), dist.mean
    assert torch.equal(torch.round(s * 255) / 255, s) and m.min() >= 0 and m.max() <= 1


def test_logistic_keeps_importance_sample_dimensions():
    out = torch.randn(5, 4, 2 * 3, 4, 4)                        # (k, B, 2C, H, W)
    x = torch.randint(0, 256, (4, 3, 4, 4)).float() / 255
    lp = DiscretizedLogistic(out, 3).log_prob(x)
    assert lp.shape == (5, 4)
    assert torch.allclose(lp[2], DiscretizedLogistic(out[2], 3).log_prob(x))


def test_batchnorm_likelihoods_are_per_example_in_eval():
    torch.manual_seed(0)
    vae = zspace.VAE(zspace.VAEConfig(input_shape=(3, 8, 8), architecture="resnet", channels=(8,), norm="batch",
                                      latent_dim=2, likelihood="logistic"))
    x = torch.randint(0, 256, (6, 3, 8, 8)).float() / 255
    vae(x).loss.backward()                                      # running statistics move off their start
    vae.eval()
    with torch.no_grad():
        q = vae.encode(x)
        alone = vae.decode(q.mean[:1]).log_prob(x[:1])
        together = vae.decode(q.mean).log_prob(x)[:1]
    assert torch.allclose(alone, together, atol=1e-3)


def test_logistic_refuses_what_it_cannot_model(tmp_path):
    x = np.random.default_rng(0).random((40, 3, 8, 8)).astype("float32")
    data = zspace.ArrayData.from_arrays(x)
    splits = zspace.DataSplits(data.head(30), data.subset(np.arange(30, 40)), "floats")
    with pytest.raises(zspace.DataError, match="8-bit"):
        zspace.train("vae", splits, progress=False, figures=False, architecture="resnet", channels=(8,),
                     latent_dim=2, likelihood="logistic", config=zspace.TrainConfig(epochs=1))
    vae = zspace.VAE(zspace.VAEConfig(input_shape=(3, 8, 8), likelihood="logistic", hidden=(8,)))
    with pytest.raises(ConfigError, match="scale"):
        vae.check_preprocessing("dequantize")


@pytest.fixture
def colour_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(96, 3, 8, 8), dtype=np.uint8)
    x[:, 0] //= 2                                                  # channels differ in their statistics
    path = tmp_path / "colour.npy"
    np.save(path, x)
    return path


COLOUR = ["--architecture", "resnet", "--channels", "8,16", "--latent-dim", "3", "--epochs", "1",
          "--batch-size", "32", "--eval-limit", "32", "--no-progress"]


def test_colour_vae_bits_per_dim_mean_what_they_say(colour_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "vae", "--data", colour_file, *COLOUR, "--likelihood", "logistic",
                           "--out", tmp_path / "logistic")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "eval", tmp_path / "logistic", "--nll-samples", 4)
    assert code == 0 and "probability" in out and "8-bit" in out
    res = json.loads((tmp_path / "logistic" / "eval-test-k4.json").read_text())
    assert res["likelihood_kind"] == "probability"
    assert res["bits_per_dim"] == pytest.approx(res["nll"] / (3 * 64 * math.log(2)), rel=1e-6)
    assert 0 < res["bits_per_dim"] < 12
    code, _, err = run_cli(capsys, "train", "vae", "--data", colour_file, *COLOUR, "--likelihood",
                           "gaussian-learned", "--preprocess", "dequantize", "--out", tmp_path / "deq")
    assert code == 0, err
    run_cli(capsys, "eval", tmp_path / "deq", "--nll-samples", 4)
    res = json.loads((tmp_path / "deq" / "eval-test-k4.json").read_text())
    assert res["likelihood_kind"] == "density bound"          # bits per 8-bit subpixel: D = 3*8*8
    assert res["bits_per_dim"] == pytest.approx(res["nll"] / (3 * 64 * math.log(2)) + 8, rel=1e-6)


def _png_channels_differ(path) -> bool:
    import matplotlib.image

    img = matplotlib.image.imread(str(path))[..., :3]
    return img.ndim == 3 and not np.allclose(img[..., 0], img[..., 1])


def test_colour_grids_and_latent_figures(colour_file, tmp_path, capsys):
    from zspace.report import latent_figures as lf
    from zspace.report.figures import as_images, image_grid

    grid = image_grid(torch.rand(5, 3, 8, 6), ncols=3)
    assert grid.shape == (2 * 9 + 1, 3 * 7 + 1, 3)
    assert as_images(torch.randint(0, 256, (2, 3, 4, 4)), (3, 4, 4)).max() <= 1
    unit = torch.rand(2, 3, 4, 4)
    unit[0, 0, 0, 0] = 1.0000001            # a decoder mean a rounding error above 1 stays in [0, 1] units
    assert torch.allclose(as_images(unit, (3, 4, 4)), unit.clamp(0, 1))
    assert torch.allclose(as_images(torch.full((1, 3, 2, 2), 128.0), (3, 2, 2)), torch.full((1, 3, 2, 2), 128 / 255))
    assert run_cli(capsys, "train", "vae", "--data", colour_file, *COLOUR, "--likelihood", "logistic",
                   "--latent-dim", "2", "--out", tmp_path / "run")[0] == 0
    run = zspace.load_run(tmp_path / "run")
    for png in (run.path / "figures" / "samples.png", run.path / "figures" / "reconstructions.png"):
        assert _png_channels_differ(png)
    for name, path in (("manifold", lf.save_manifold(run, tmp_path / "m.png", n=4)),
                       ("traverse", lf.save_traversal(run, tmp_path / "t.png", steps=3)),
                       ("interpolate", lf.save_interpolations(run, tmp_path / "i.png", pairs=1, steps=3)),
                       ("attribute", lf.save_attribute(run, tmp_path / "a.png", mask=np.arange(10) % 2 == 0,
                                                       n=2, limit=32))):
        assert _png_channels_differ(path), name


def test_frey_shaped_manifold_and_small_data(tmp_path):
    from zspace.report.latent_figures import save_manifold

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, size=(80, 1, 28, 20), dtype=np.uint8)
    data = zspace.ArrayData.from_arrays(faces)
    splits = zspace.DataSplits(data.head(64), data.subset(np.arange(64, 80)), "frey-like")
    run = zspace.train("vae", splits, out=tmp_path / "frey", progress=False, figures=False, latent_dim=2,
                       hidden=(32,), likelihood="gaussian-learned", config=zspace.TrainConfig(epochs=1, batch_size=16))
    grid = zspace.explore.manifold(run.model, n=3)
    assert grid.shape == (3, 3, 1, 28, 20)
    assert save_manifold(run, tmp_path / "frey.png", n=3).stat().st_size > 0


def test_a_vae_trains_on_olivetti_sized_data(tmp_path, monkeypatch):
    """Small-data training: 40 'subjects' of 64x64 faces in the olivetti-faces file layout."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(60, 64, 64), dtype=np.uint8)
    np.savez(tmp_path / "olivetti-faces.npz", x=x, y=np.arange(60) % 40)
    monkeypatch.setenv("ZSPACE_DATA", str(tmp_path))
    data = zspace.load_dataset("olivetti-faces")
    assert data.train.example_shape == (1, 64, 64)
    run = zspace.train("vae", data, progress=False, figures=False, latent_dim=4, architecture="resnet",
                       channels=(4, 8, 8), likelihood="logistic", config=zspace.TrainConfig(epochs=2, batch_size=16))
    hist = run.history()
    assert len(hist) == 2 and all(np.isfinite(r["test_elbo"]) for r in hist)


@pytest.mark.parametrize("shape,stages,grid", [((3, 32, 32), 2, (8, 8)), ((3, 64, 64), 3, (8, 8)),
                                               ((3, 64, 64), 2, (16, 16))])
def test_resnet_vqvae_shapes_colour_in_and_out(shape, stages, grid):
    torch.manual_seed(0)
    vq = zspace.VQVAE(zspace.VQVAEConfig(input_shape=shape, architecture="resnet", channels=(8,) * stages,
                                         embedding_dim=4, num_codes=16))
    x = torch.rand(2, *shape)
    vq(x).loss.backward()
    assert all(p.grad is not None for p in vq.encoder.parameters())
    codes = vq.eval().encode_codes(x)
    assert codes.shape == (2, *grid) and vq.code_shape == grid
    assert vq.decode_codes(codes).shape == (2, *shape)
    with pytest.raises(zspace.DataError, match="code grids must be"):
        vq.decode_codes(codes[:, :4])
    for bad in (dict(input_shape=(3, 30, 30), channels=(8, 8)), dict(architecture="mlp"), dict(norm="layer")):
        with pytest.raises(ConfigError) as e:
            zspace.VQVAEConfig(**{"input_shape": (3, 32, 32), "architecture": "resnet", **bad})
        assert "\n" not in str(e.value)


def test_colour_vqvae_cli_and_grey_data_into_it(colour_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "vqvae", "--data", colour_file, "--architecture", "resnet",
                           "--channels", "8,8", "--embedding-dim", "4", "--num-codes", "8", "--epochs", "1",
                           "--batch-size", "32", "--no-progress", "--out", tmp_path / "vq")
    assert code == 0, err
    run = zspace.load_run(tmp_path / "vq")
    assert run.model.config.architecture == "resnet" and _png_channels_differ(run.path / "figures" /
                                                                               "reconstructions.png")
    grey = tmp_path / "grey.npy"
    np.save(grey, np.zeros((20, 1, 8, 8), np.uint8))
    code, _, err = run_cli(capsys, "encode", tmp_path / "vq", "--data", grey, "--out", tmp_path / "c.npy")
    assert code == 2 and "1 channels into a 3-channel model" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "train", "vqvae", "--data", colour_file, "--architecture", "resnet",
                           "--channels", "8,8,8,8", "--epochs", "1", "--no-progress", "--out", tmp_path / "deep")
    assert code == 2 and "divisible by 16, got 8x8" in err and len(err.strip().splitlines()) == 1


# ---- colour PixelCNN ---------------------------------------------------------------------------
def _colour_pixelcnn(head, gated=False, **kw):
    from zspace.models.pixelcnn import GatedPixelCNN, GatedPixelCNNConfig, PixelCNN, PixelCNNConfig

    cls, cfg = (GatedPixelCNN, GatedPixelCNNConfig) if gated else (PixelCNN, PixelCNNConfig)
    return cls(cfg(**{"input_shape": (3, 5, 5), "head": head, "channels": 50, "residual_blocks": 2,
                      "head_channels": 40, "first_kernel": 3, "mixtures": 2, **kw}))  # uneven thirds


def _input_gradient(model, x_in, out_channels, r, c):
    """|d out[channels at (r, c)] / d input| of example 0, (C, H, W)."""
    x_in = x_in.clone().requires_grad_(True)
    g, = torch.autograd.grad(model.raw(x_in)[0, out_channels, r, c].sum(), x_in)
    return g[0].abs()


@pytest.mark.parametrize("r,c", [(0, 0), (2, 3), (4, 4)])
def test_colour_masks_are_causal_in_r_g_b_order(r, c):
    torch.manual_seed(0)
    model = _colour_pixelcnn("categorical")
    x_in = model._network_input(torch.randint(0, 256, (1, 3, 5, 5)))
    order = torch.arange(5 * 5 * 3).reshape(5, 5, 3).permute(2, 0, 1)          # subpixel t = (row, col, colour)
    for ch in range(3):                                                        # R, G, B's 256 logits
        g = _input_gradient(model, x_in, slice(ch * 256, (ch + 1) * 256), r, c)
        t = int(order[ch, r, c])
        assert torch.all(g[order >= t] == 0), f"colour {ch} sees itself or the future"
        assert torch.all(g[:, r, c][:ch] > 0), f"colour {ch} misses an earlier colour of its own pixel"
        if c > 0:
            assert torch.all(g[:, r, c - 1] > 0)                               # the pixel to the left
    # the coupled logistic mixture (plain and gated) sees no channel of the current pixel
    for gated in (False, True):
        model = _colour_pixelcnn("logistic-mixture", gated)
        g = _input_gradient(model, x_in, slice(None), r, c).sum(0)
        t = r * 5 + c
        assert torch.all(g.flatten()[t:] == 0) and (t == 0 or g.flatten()[:t].sum() > 0)


def test_rgb_logistic_mixture_sums_to_one_over_all_colours():
    """All 256^3 colours of one pixel through log_prob (one component: a mixture's total is then
    the weighted sum of totals of 1); the colours lie on the spatial axes, 32 values of R a chunk."""
    from zspace.distributions import CoupledLogisticMixture

    torch.manual_seed(0)
    params = torch.randn(1, 10, 1, 1) * 1.5
    params[:, 4:7] -= 2.0                                                      # sharp log-scales
    levels = torch.arange(256)
    mass_of_r = []                                                             # P(R in [r, r + 32))
    for r in range(0, 256, 32):
        x = torch.stack(torch.meshgrid(levels[r:r + 32], levels, levels, indexing="ij"), 0)
        chunk = CoupledLogisticMixture(params.expand(1, -1, 32 * 256, 256), 1)
        mass_of_r.append(chunk.log_prob_per_pixel(x.reshape(1, 3, 32 * 256, 256)).double().exp().sum())
    assert float(sum(mass_of_r)) == pytest.approx(1.0, abs=1e-5)
    # samples follow the same law: R's histogram in eighths against the exact masses
    s = CoupledLogisticMixture(params.expand(20000, -1, -1, -1), 1).sample()
    assert s.shape == (20000, 3, 1, 1) and 0 <= s.min() and s.max() <= 255
    freq = torch.bincount(s[:, 0].flatten() // 32, minlength=8).double() / 20000
    assert torch.allclose(freq, torch.stack(mass_of_r), atol=0.015)
    # and the coupling: G's draws move with R's (positive coefficient a)
    p2 = params.clone()
    p2[:, 1:7] = torch.tensor([0.0, 0.0, 0.0, -1.0, -3.0, -3.0])[None, :, None, None]   # wide R, sharp G
    p2[:, 7] = 3.0                                                             # tanh(a) ~ 1
    s = CoupledLogisticMixture(p2.expand(20000, -1, -1, -1), 1).sample()[:, :, 0, 0].double()
    assert torch.corrcoef(s[:, :2].T)[0, 1] > 0.3


@pytest.mark.parametrize("head,gated", [("categorical", False), ("logistic-mixture", False),
                                        ("logistic-mixture", True)])
def test_colour_pixelcnn_bits_per_dim_and_cached_sampling(head, gated):
    torch.manual_seed(0)
    model = _colour_pixelcnn(head, gated, channels=12, head_channels=12).eval()
    x = torch.randint(0, 256, (4, 3, 5, 5))
    lp = model.log_prob(x)
    assert lp.shape == (4,) and torch.all(lp < 0)
    bpd = float(-lp.detach().mean() / (75 * math.log(2)))
    assert 6 < bpd < 12                                                        # near 8 bits untrained
    model(x).loss.backward()
    torch.manual_seed(3)
    a = model.sample(3)
    torch.manual_seed(3)
    b = model.sample(3, cached=False)
    assert torch.equal(a, b) and a.shape == (3, 3, 5, 5) and 0 <= a.min() and a.max() <= 255


def test_colour_pixelcnn_refuses_what_it_cannot_do():
    from zspace.models.pixelcnn import GatedPixelCNNConfig, PixelCNNConfig

    for cls, kw in ((PixelCNNConfig, dict(head="bernoulli")), (PixelCNNConfig, dict(head="categorical", channels=4)),
                    (PixelCNNConfig, dict(input_shape=(2, 8, 8))), (GatedPixelCNNConfig, dict(head="categorical")),
                    (PixelCNNConfig, dict(head="categorical", embedding_dim=4))):
        with pytest.raises(ConfigError) as e:
            cls(**{"input_shape": (3, 8, 8), "channels": 12, "head_channels": 12, **kw})
        assert "\n" not in str(e.value)
