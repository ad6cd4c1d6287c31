"""VQ-VAE: straight-through gradients, the commitment loss, EMA codebook, dead-code restarts."""
import pytest
import torch

import zspace
from zspace import ConfigError
from zspace.models.vqvae import VectorQuantizer, VQVAE, VQVAEConfig

from .conftest import tiny_config


def test_straight_through_passes_the_decoder_gradient_to_the_encoder():
    torch.manual_seed(0)
    q = VectorQuantizer(8, 4, commitment=0.25, ema=False)
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_st, codes, loss, _ = q(z_e)
    assert torch.allclose(z_st, q.lookup(codes))                       # forward: the quantised vectors
    g = torch.randn_like(z_st)
    (z_st * g).sum().backward()
    assert torch.allclose(z_e.grad, g)                                 # backward: the identity
    # the commitment term: beta ||z_e - sg(z_q)||^2 per example (plus the codebook term without EMA)
    z_e2 = z_e.detach()
    expected = (0.25 + 1.0) * ((z_e2 - q.lookup(codes)) ** 2).sum(1).flatten(1).sum(1)
    assert torch.allclose(loss.detach(), expected, rtol=1e-5)


def test_ema_codebook_moves_to_its_cluster_and_dead_codes_restart():
    torch.manual_seed(0)
    q = VectorQuantizer(4, 2, ema=True, decay=0.5, restart_threshold=0.05)
    q.train()
    q.initialized.fill_(True)                      # keep the hand-placed codes
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [50.0, 50.0]]))
        q.ema_sum.copy_(q.codebook)
    data = torch.tensor([[1.0, 1.0], [9.0, 9.0], [-9.0, 9.0]]).reshape(1, 3, 2).permute(0, 2, 1)[..., None]
    for _ in range(12):
        q(data)                                                       # (1, 2, 3, 1): three vectors
    cb = q.codebook
    assert torch.allclose(cb[0], torch.tensor([1.0, 1.0]), atol=0.05)   # each used code -> its vector
    assert torch.allclose(cb[1], torch.tensor([9.0, 9.0]), atol=0.05)
    # code 3 was never chosen: its count decayed below the threshold and it restarted on a data vector
    assert any(torch.allclose(cb[3], v, atol=1e-4) for v in torch.tensor([[1.0, 1.0], [9.0, 9.0], [-9.0, 9.0]]))


def test_vqvae_trains_and_reports_codebook_use(digits):
    run = zspace.train("vqvae", digits, config=tiny_config(epochs=2), progress=False, channels=(8,),
                       embedding_dim=4, num_codes=16)
    last = run.history()[-1]
    assert {"train_mse", "train_vq", "train_perplexity"} <= set(last)
    assert 1.0 < last["train_perplexity"] <= 16
    b = next(iter(run.loader("test", 10).epoch(0)))
    codes = run.model.encode_codes(b.x)
    assert codes.shape == (10, 4, 4) and codes.min() >= 0 and codes.max() < 16
    assert run.model.decode_codes(codes).shape == b.x.shape
    assert torch.equal(run.model.reconstruct(b.x), run.model.decode_codes(codes))


def test_first_batch_initialises_the_codebook():
    torch.manual_seed(0)
    q = VectorQuantizer(6, 3)
    z = torch.randn(2, 3, 4, 4) * 5 + 20                 # far from the random initial codes
    q.train()
    _, codes, _, perplexity = q(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    assert all(any(torch.allclose(c, v, atol=2.0) for v in flat) for c in q.codebook)
    assert perplexity > 2 and bool(q.initialized)


def test_bad_vqvae_configurations():
    with pytest.raises(ConfigError, match="<= 256"):
        VQVAEConfig(num_codes=512)
    with pytest.raises(ConfigError, match="divisible by 4"):
        VQVAEConfig(input_shape=(1, 30, 30))
    with pytest.raises(ConfigError, match="decay"):
        VectorQuantizer(4, 2, decay=1.5)


def test_prior_over_codes_end_to_end(tmp_path, capsys):
    import json

    import numpy as np

    from zspace.cli import main

    vq, prior = tmp_path / "vq", tmp_path / "prior"
    assert main(["train", "vqvae", "--data", "digits", "--channels", "8", "--embedding-dim", "4", "--num-codes", "16",
                 "--epochs", "1", "--batch-size", "64", "--no-progress", "--out", str(vq)]) == 0
    assert main(["train", "prior", str(vq), "--out", str(prior), "--channels", "8", "--residual-blocks", "1",
                 "--head-channels", "8", "--num-classes", "10", "--epochs", "1", "--batch-size", "64",
                 "--no-progress"]) == 0
    codes = np.load(prior / "codes.npz")
    assert codes["x_train"].shape[1:] == (1, 4, 4) and codes["x_train"].max() < 16
    assert json.loads((prior / "config.json").read_text())["prior_of"] == str(vq.resolve())
    assert main(["eval", str(prior)]) == 0
    assert "bits per code" in capsys.readouterr().out
    assert main(["sample", str(prior), "--label", "3", "-n", "2", "--out", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (2, 1, 8, 8) and 0 <= s.min() and s.max() <= 1          # decoded images, not codes
    assert main(["train", "prior", str(prior), "--out", str(tmp_path / "p2")]) == 2   # not a VQ-VAE run
    assert "needs a VQ-VAE run" in capsys.readouterr().err


def test_encode_writes_code_grids(tmp_path, capsys):
    import numpy as np

    from zspace.cli import main

    vq = tmp_path / "vq"
    assert main(["train", "vqvae", "--data", "digits", "--channels", "8", "--embedding-dim", "4", "--num-codes", "8",
                 "--epochs", "1", "--no-progress", "--out", str(vq)]) == 0
    assert main(["encode", str(vq), "--out", str(tmp_path / "codes.npy")]) == 0
    codes = np.load(tmp_path / "codes.npy")
    assert codes.shape[1:] == (4, 4) and codes.min() >= 0 and codes.max() < 8


# ---- the transformer prior over tiles ----------------------------------------------------------
def _transformer(**kw):
    from zspace.models import TileTransformer, TileTransformerConfig

    torch.manual_seed(0)
    return TileTransformer(TileTransformerConfig(**{"input_shape": (1, 3, 4), "levels": 6, "width": 16,
                                                    "layers": 2, "heads": 4, **kw})).eval()


def test_transformer_prior_is_causal():
    model = _transformer()
    x = torch.randint(0, 6, (1, 1, 3, 4))
    for t in (0, 5, 11):
        logits = model.logits(x)[0, t]
        # change every tile at or after t: the logits at t must not move; change one before: they must
        later = x.clone().flatten()
        later[t:] = (later[t:] + 1) % 6
        assert torch.allclose(model.logits(later.view_as(x))[0, t], logits, atol=1e-6)
        if t:
            earlier = x.clone().flatten()
            earlier[t - 1] = (earlier[t - 1] + 1) % 6
            assert not torch.allclose(model.logits(earlier.view_as(x))[0, t], logits, atol=1e-4)


@pytest.mark.parametrize("classes", [0, 3])
def test_transformer_cached_sampling_equals_the_uncached_loop(classes):
    model = _transformer(num_classes=classes)
    y = torch.tensor([0, 2, 1, 2]) if classes else None
    torch.manual_seed(7)
    a = model.sample(4, y=y)
    torch.manual_seed(7)
    b = model.sample(4, y=y, cached=False)
    assert torch.equal(a, b) and a.shape == (4, 1, 3, 4) and 0 <= a.min() and a.max() < 6
    # exact likelihood: the probabilities of all 6^2 grids of a 1x2 model sum to 1
    small = _transformer(input_shape=(1, 1, 2), num_classes=classes)
    grids = torch.cartesian_prod(torch.arange(6), torch.arange(6)).reshape(36, 1, 1, 2)
    lp = small.log_prob(grids, y=torch.ones(36, dtype=torch.long) if classes else None)
    assert float(torch.logsumexp(lp.detach(), 0)) == pytest.approx(0.0, abs=1e-5)


def test_transformer_refuses_grids_that_do_not_fit():
    model = _transformer()
    with pytest.raises(zspace.DataError, match=r"code grids must be \(B, 1, 3, 4\)"):
        model.log_prob(torch.zeros(2, 1, 4, 4, dtype=torch.long))
    from zspace.models import TileTransformerConfig, VQPriorConfig

    for bad in (dict(width=10, heads=4), dict(input_shape=(3, 4, 4)), dict(head="logistic-mixture")):
        with pytest.raises(ConfigError):
            TileTransformerConfig(**bad)
    with pytest.raises(ConfigError, match="4 codes on"):          # a prior whose grid is not the VQ-VAE's
        VQPriorConfig(vqvae=dict(input_shape=(1, 8, 8), channels=(4,), num_codes=4),
                      prior_model="tile-transformer", prior=dict(input_shape=(1, 2, 2)))


def test_transformer_prior_end_to_end(tmp_path, capsys):
    import numpy as np

    from zspace.cli import main

    vq, prior = tmp_path / "vq", tmp_path / "tf"
    assert main(["train", "vqvae", "--data", "digits", "--channels", "8", "--embedding-dim", "4", "--num-codes", "16",
                 "--epochs", "1", "--batch-size", "64", "--no-progress", "--out", str(vq)]) == 0
    assert main(["train", "prior", str(vq), "--transformer", "--out", str(prior), "--width", "16", "--layers", "1",
                 "--heads", "2", "--num-classes", "10", "--epochs", "1", "--batch-size", "64", "--no-progress"]) == 0
    run = zspace.load_run(prior)
    assert run.model.config.prior_model == "tile-transformer" and run.model.prior.config.levels == 16
    assert main(["eval", str(prior)]) == 0 and "bits per code" in capsys.readouterr().out
    assert main(["sample", str(prior), "--label", "3", "-n", "2", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (2, 1, 8, 8)
    capsys.readouterr()
    assert main(["train", "prior", str(vq), "--transformer", "--channels", "8", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--channels does not apply to the tile-transformer prior" in err and len(err.strip().splitlines()) == 1
