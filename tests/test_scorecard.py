"""The scorecard: every criterion measured, one data set / N / extractor per table."""
import numpy as np
import pytest
import torch
from torch import nn

import zspace
from zspace import ConfigError
from zspace.evaluation.features import load_extractor
from zspace.scorecard import CRITERIA, Scorecard, scorecard

from .conftest import tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits):
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("card")
    vae = zspace.train("vae", digits, out=base / "vae", config=tiny_config(epochs=2), progress=False,
                       latent_dim=4, hidden=(32,), figures=False)
    pcnn = zspace.train("pixelcnn", digits, out=base / "pcnn", config=tiny_config(epochs=1), progress=False,
                        channels=8, residual_blocks=1, head_channels=8, figures=False)
    ae = zspace.train("ae", digits, out=base / "ae", config=tiny_config(epochs=1), progress=False,
                      latent_dim=4, hidden=(32,), figures=False)
    return vae, pcnn, ae


def test_scorecard_fills_every_criterion_it_can(runs):
    torch.manual_seed(0)
    ext = load_extractor(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh()), name="random-16")
    card = scorecard(list(runs), n=150, extractor=ext)
    md = card.markdown()
    assert "N = 150" in md and "random-16" in md
    real, vae, pcnn, ae = card.columns.values()
    assert set(real) == {"high-quality samples", "coverage", "efficient sampling"}
    assert set(vae) == set(pcnn) == set(ae) == set(CRITERIA)  # every model has every row, measured or ✗
    assert not any(v.startswith("✗") for v in vae.values())   # a VAE measures them all
    assert "exact" in pcnn["efficient likelihood"] and "IS bound" in vae["efficient likelihood"]
    assert pcnn["well-behaved latent space"] == "✗ no latent variables"
    assert ae["efficient sampling"] == "✗ no prior to sample from"           # no prior, but a code
    assert not ae["well-behaved latent space"].startswith("✗") and ae["efficient likelihood"] == "✗ no likelihood"
    fid_real = float(real["high-quality samples"].split()[1].rstrip(","))
    fid_vae = float(vae["high-quality samples"].split()[1].rstrip(","))
    assert 0 <= fid_real < fid_vae                            # the real test set is the floor
    assert "<table>" in card.html() and md.count("\n|") == len(CRITERIA) + 2


def test_scorecard_refuses_mixtures(runs, tmp_path):
    card = Scorecard("digits", 100, "LeNet-mnist")
    with pytest.raises(ConfigError, match="cannot share a table"):
        card.add("x", "digits", 200, "LeNet-mnist", {})
    with pytest.raises(ConfigError, match="more than the real data offer"):
        scorecard([runs[0]], n=100000, extractor=load_extractor(nn.Flatten(), name="flat"))
    other = zspace.train("vae", zspace.DataSplits(zspace.ArrayData(np.zeros((50, 1, 8, 8), np.uint8) + 3),
                                                  zspace.ArrayData(np.zeros((20, 1, 8, 8), np.uint8)), "blank"),
                         out=tmp_path / "other", config=tiny_config(epochs=1), progress=False, latent_dim=2,
                         hidden=(8,), figures=False)
    with pytest.raises(ConfigError, match="different data"):
        scorecard([runs[0], other], n=10)


def test_scorecard_cli_says_when_no_extractor_fits(runs, tmp_path, capsys):
    from zspace.cli import main

    assert main(["scorecard", str(runs[0].path), "-n", "20", "--out", str(tmp_path)]) == 2
    assert "no shipped extractor for 'digits'" in capsys.readouterr().err


def test_scorecard_likelihood_row_takes_its_samples_and_examples(runs, tmp_path, capsys):
    from zspace.cli import main

    ext = load_extractor(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh()), name="random-16")
    card = scorecard([runs[0]], n=40, extractor=ext, nll_samples=3, nll_limit=30)
    cell = list(card.columns.values())[1]["efficient likelihood"]
    assert "IS bound, k = 3" in cell
    assert main(["scorecard", str(runs[0].path), "--nll-samples", "0", "--out", str(tmp_path)]) == 2
    assert "--nll-samples must be >= 1, got 0" in capsys.readouterr().err
