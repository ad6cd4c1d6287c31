"""PixelCNN: causality of every masked layer, normalised pixel distributions, exact NLL."""
import math

import numpy as np
import pytest
import torch

import zspace
from zspace import ConfigError
from zspace.distributions import Categorical, DiscretizedLogisticMixture
from zspace.models.pixelcnn import MaskedConv2d, PixelCNN, PixelCNNConfig

from .conftest import tiny_config


def dependence(net, shape=(1, 1, 6, 6)):
    """For each output pixel t, the set of input pixels the gradient of its outputs reaches."""
    h, w = shape[2:]
    deps = {}
    for t in range(h * w):
        x = torch.rand(shape, requires_grad=True)
        out = net(x)
        out[0].flatten(1)[:, t].sum().backward()
        deps[t] = set(torch.nonzero(x.grad[0].abs().sum(0).flatten() > 0).flatten().tolist())
    return deps


@pytest.mark.parametrize("mask", ["A", "B"])
def test_masked_convolution_sees_only_the_past(mask):
    torch.manual_seed(0)
    conv = MaskedConv2d(1, 3, 5, mask)
    with torch.no_grad():
        conv.weight.normal_()
    for t, seen in dependence(conv).items():
        assert all(s < t or (mask == "B" and s == t) for s in seen), (t, seen)
        assert (t in seen) == (mask == "B") or t == 0 and mask == "A"


@pytest.mark.parametrize("head", ["bernoulli", "categorical", "logistic-mixture"])
def test_the_whole_network_is_causal(head):
    torch.manual_seed(0)
    m = PixelCNN(PixelCNNConfig(input_shape=(1, 6, 6), head=head, channels=8, residual_blocks=2,
                                head_channels=8, mixtures=2))
    for name, p in m.named_parameters():   # random weights, positive biases: few dead ReLUs
        torch.nn.init.normal_(p, mean=0.5 if name.endswith("bias") else 0.0, std=0.5)
    deps = dependence(lambda x: m.net(x))
    for t, seen in deps.items():
        assert all(s < t for s in seen), f"pixel {t} depends on {sorted(s for s in seen if s >= t)}"
    assert len(deps[35]) >= 10                                  # the last pixel sees much of the past


def test_pixel_distributions_sum_to_one():
    torch.manual_seed(0)
    levels = torch.arange(256).reshape(256, 1, 1, 1)                 # all values of one pixel
    logits = torch.randn(1, 256, 1, 1, 1).expand(256, 256, 1, 1, 1)
    p = Categorical(logits).log_prob(levels).exp()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-5)
    for _ in range(3):
        params = torch.randn(1, 9, 1, 1, 1) * torch.tensor([1, 1, 1, 0.8, 0.8, 0.8, 2, 2, 2]).reshape(1, 9, 1, 1, 1)
        dlm = DiscretizedLogisticMixture(params.expand(256, 9, 1, 1, 1), num_mixtures=3)
        probs = dlm.log_prob(levels).exp()
        assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
        assert (probs > 0).all()                                    # edge and tiny bins exact, not zero
    sharp = DiscretizedLogisticMixture(torch.tensor([0.0, 0.0, -7.0]).reshape(1, 3, 1, 1, 1).expand(256, 3, 1, 1, 1), 1)
    lp = sharp.log_prob(levels)
    assert torch.isfinite(lp).all() and float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-4)   # float32 at scale e^-7


def test_exact_nll_and_bits_per_dim(digits):
    from zspace.evaluation import bits_per_dim, evaluate_exact_likelihood

    run = zspace.train("pixelcnn", digits, config=tiny_config(epochs=1), progress=False, head="categorical",
                       channels=8, residual_blocks=1, head_channels=8)
    assert run.data_spec.preprocessing == "uint8"
    rep = evaluate_exact_likelihood(run.model, run.loader("test", 100).epoch(0))
    b = next(iter(run.loader("test", 100).epoch(0)))
    with torch.no_grad():
        direct = -run.model.log_prob(b.x).double().mean()
    assert rep.num_examples == len(digits.test) and rep.nll > 0
    assert rep.bits_per_dim == pytest.approx(rep.nll / (64 * math.log(2)))
    with torch.no_grad():
        again = -run.model.log_prob(b.x).double().mean()
    assert float(direct) == float(again)                                                     # deterministic
    assert float(bits_per_dim(64 * math.log(2) * 8, 64)) == pytest.approx(8.0)               # uniform bytes


def test_sampling_is_reproducible_and_valid():
    m = PixelCNN(PixelCNNConfig(input_shape=(1, 5, 5), head="categorical", channels=8, residual_blocks=1,
                                head_channels=8))
    torch.manual_seed(3)
    a = m.sample(4)
    torch.manual_seed(3)
    b = m.sample(4)
    assert torch.equal(a, b) and a.dtype == torch.long and a.min() >= 0 and a.max() <= 255
    mb = PixelCNN(PixelCNNConfig(input_shape=(1, 5, 5), channels=8, residual_blocks=1, head_channels=8))
    s = mb.sample(3)
    assert set(s.unique().tolist()) <= {0.0, 1.0}


def test_bad_configurations_and_pairings(digits):
    with pytest.raises(ConfigError, match="colour PixelCNN models 8-bit RGB"):
        PixelCNNConfig(input_shape=(3, 8, 8))          # a Bernoulli head is for binary grey images
    with pytest.raises(ConfigError, match="unknown head"):
        PixelCNNConfig(head="gaussian")
    with pytest.raises(ConfigError, match="odd kernel"):
        MaskedConv2d(1, 1, 4, "A")
    with pytest.raises(ConfigError, match="integer"):
        zspace.train("pixelcnn", digits, preprocessing="scale", head="categorical", config=tiny_config(epochs=1),
                     progress=False, channels=4, residual_blocks=0, head_channels=4)


@pytest.mark.parametrize("head", ["bernoulli", "categorical", "logistic-mixture"])
def test_cached_sampling_equals_naive_sampling(head):
    m = PixelCNN(PixelCNNConfig(input_shape=(1, 7, 7), head=head, channels=8, residual_blocks=2,
                                head_channels=8, mixtures=2)).double()     # float64: no rounding ties
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    torch.manual_seed(5)
    cached = m.sample(3, cached=True)
    torch.manual_seed(5)
    naive = m.sample(3, cached=False)
    assert torch.equal(cached, naive)
    assert len(cached.unique()) > 1                                  # not a degenerate constant image


def gated(num_classes=0, head="categorical", layers=3, size=6):
    from zspace.models.pixelcnn import GatedPixelCNN, GatedPixelCNNConfig

    torch.manual_seed(0)
    m = GatedPixelCNN(GatedPixelCNNConfig(input_shape=(1, size, size), head=head, channels=8, residual_blocks=layers,
                                          first_kernel=5, head_channels=8, mixtures=2, num_classes=num_classes))
    for name, p in m.named_parameters():
        torch.nn.init.normal_(p, mean=0.3 if name.endswith("bias") else 0.0, std=0.5)
    return m


def test_gated_pixelcnn_is_causal_and_has_no_blind_spot():
    m = gated()
    deps = dependence(lambda x: m.raw(x))
    for t, seen in deps.items():
        assert all(s < t for s in seen), f"pixel {t} depends on {sorted(s for s in seen if s >= t)}"
    r, c = 5, 2
    row_above = {(r - 1) * 6 + j for j in range(6)}
    assert row_above <= deps[r * 6 + c]                # including the columns to the right: no blind spot
    assert {r * 6 + j for j in range(c)} <= deps[r * 6 + c]
    # the vertical stack on its own never sees the current row
    for t, seen in dependence(lambda x: m.vertical(x)[id(m.blocks[-1])]).items():
        assert all(s // 6 < t // 6 for s in seen)


@pytest.mark.parametrize("num_classes, head", [(0, "bernoulli"), (3, "logistic-mixture")])
def test_gated_cached_sampling_equals_naive(num_classes, head):
    m = gated(num_classes, head, layers=2, size=5).double()
    y = torch.tensor([0, 2]) if num_classes else None
    torch.manual_seed(1)
    a = m.sample(2, y=y, cached=True)
    torch.manual_seed(1)
    b = m.sample(2, y=y, cached=False)
    assert torch.equal(a, b)


def test_class_conditioning_changes_the_distribution_and_is_checked(digits):
    m = gated(num_classes=10)
    x = torch.randint(0, 256, (4, 1, 6, 6))
    assert not torch.allclose(m.log_prob(x, torch.zeros(4, dtype=torch.long)), m.log_prob(x, torch.full((4,), 7)))
    with pytest.raises(ConfigError, match="class-conditional"):
        m.log_prob(x)
    run = zspace.train("gated-pixelcnn", digits, config=tiny_config(epochs=1), progress=False, channels=8,
                       residual_blocks=1, head_channels=8, num_classes=10, head="categorical")
    assert torch.isfinite(torch.tensor(run.history()[-1]["test_nll"]))
    unlabelled = zspace.DataSplits(zspace.ArrayData(digits.train.x), zspace.ArrayData(digits.test.x), "nolabels")
    with pytest.raises(zspace.DataError, match="needs labels"):
        zspace.train("gated-pixelcnn", unlabelled, config=tiny_config(epochs=1), progress=False, channels=4,
                     residual_blocks=0, head_channels=4, num_classes=10, head="categorical")


def test_cli_train_eval_sample_report(tmp_path, capsys):
    import json

    from zspace.cli import main

    run = tmp_path / "pcnn"
    assert main(["train", "gated-pixelcnn", "--data", "digits", "--head", "logistic-mixture", "--channels", "8",
                 "--residual-blocks", "1", "--head-channels", "8", "--mixtures", "2", "--num-classes", "10",
                 "--epochs", "1", "--batch-size", "64", "--eval-limit", "50", "--no-progress", "--out", str(run)]) == 0
    assert main(["eval", str(run), "--limit", "40"]) == 0
    result = json.loads((run / "eval-test-exact.json").read_text())
    assert result["exact"] and result["num_examples"] == 40 and result["likelihood_kind"] == "probability"
    assert result["bits_per_dim"] == pytest.approx(result["nll"] / (64 * math.log(2)))
    assert main(["sample", str(run), "--label", "4", "-n", "3", "--out", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (3, 1, 8, 8) and s.min() >= 0 and s.max() <= 255
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "Samples from the prior" in page and "Reconstructions" in page
    capsys.readouterr()


def test_commands_that_need_a_code_refuse_autoregressive_runs(tmp_path, capsys):
    from zspace.cli import main

    run = tmp_path / "p"
    assert main(["train", "pixelcnn", "--data", "digits", "--channels", "4", "--residual-blocks", "0",
                 "--head-channels", "4", "--epochs", "1", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    for argv, message in ((["encode", str(run), "--out", str(tmp_path / "z.npy")], "no encoder"),
                          (["reconstruct", str(run), "--out", str(tmp_path / "r.png")], "does not reconstruct"),
                          (["denoise", str(run), "--out", str(tmp_path / "d.png")], "cannot denoise"),
                          (["explore", "traverse", str(run), "--out", str(tmp_path / "t.png")], "no continuous latent")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_levels_are_checked_against_the_data(digits):
    with pytest.raises(zspace.DataError, match="16 levels"):
        zspace.train("pixelcnn", digits, config=tiny_config(epochs=1), progress=False, head="categorical",
                     levels=16, channels=4, residual_blocks=0, head_channels=4)
    with pytest.raises(ConfigError, match="first_kernel"):
        PixelCNNConfig(first_kernel=1)
    m = PixelCNN(PixelCNNConfig(input_shape=(1, 4, 4), channels=4, residual_blocks=0, head_channels=4))
    with pytest.raises(ConfigError, match=">= 1"):
        m.sample(0)


def test_channels_last_layout_gives_the_nchw_likelihood_and_gradients():
    """The PixelCNN's default NHWC layout changes speed only: same log p(x) and gradients as NCHW."""
    torch.manual_seed(0)
    m = PixelCNN(PixelCNNConfig(input_shape=(1, 8, 8), channels=8, residual_blocks=2, head_channels=16))
    assert m.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = (torch.rand(4, 1, 8, 8) < 0.3).float()
    lp = m.log_prob(x)
    grads = torch.autograd.grad(lp.sum(), list(m.parameters()))
    m.channels_last = False
    m.to(memory_format=torch.contiguous_format)
    lp2 = m.log_prob(x)
    torch.testing.assert_close(lp, lp2, rtol=1e-5, atol=1e-4)
    for a, b in zip(grads, torch.autograd.grad(lp2.sum(), list(m.parameters()))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
