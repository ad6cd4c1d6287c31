"""The tasks layer: one choice of likelihood estimator, shared PSNR, result dataclasses."""
import numpy as np
import pytest
import torch

import zspace
from zspace import tasks
from zspace.evaluation.image_quality import psnr

from .conftest import tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    digits = zspace.load_dataset("digits")
    root = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(epochs=1)
    return {
        "vae": zspace.train("vae", digits, out=root / "vae", config=cfg, progress=False, figures=False,
                            latent_dim=2, hidden=(16,)),
        "pixelcnn": zspace.train("pixelcnn", digits, out=root / "pcnn", config=cfg, progress=False, figures=False,
                                 preprocessing="static-binarize", channels=8, residual_blocks=1, head_channels=8,
                                 first_kernel=3),
        "ae": zspace.train("ae", digits, out=root / "ae", config=cfg, progress=False, figures=False,
                           latent_dim=4, hidden=(16,)),
    }


def test_evaluate_run_chooses_the_estimator_by_capability(runs):
    vae = tasks.evaluate_run(runs["vae"], nll_samples=3, limit=20)
    assert not vae.exact and vae.likelihood.num_samples == 3 and vae.name == "k3"
    assert vae.reconstruction_mse is not None and vae.meaning.kind
    pcnn = tasks.evaluate_run(runs["pixelcnn"], limit=20)
    assert pcnn.exact and pcnn.name == "exact" and pcnn.reconstruction_mse is None
    assert pcnn.as_dict()["exact"] is True and pcnn.meaning.kind == "probability"
    ae = tasks.evaluate_run(runs["ae"], limit=20)
    assert ae.likelihood is None and "nll" not in ae.as_dict() and ae.reconstruction_mse > 0


def test_evaluate_run_is_seeded(runs):
    a = tasks.evaluate_run(runs["vae"], nll_samples=2, limit=10, seed=1).likelihood.nll
    b = tasks.evaluate_run(runs["vae"], nll_samples=2, limit=10, seed=1).likelihood.nll
    assert a == b


def test_bad_arguments_are_config_errors(runs):
    with pytest.raises(zspace.ConfigError, match="--nll-samples"):
        tasks.evaluate_run(runs["vae"], nll_samples=0, limit=5)
    with pytest.raises(zspace.ConfigError, match="--limit"):
        tasks.evaluate_run(runs["vae"], limit=0)
    with pytest.raises(zspace.ConfigError, match="does not reconstruct"):
        tasks.reconstruct_run(runs["pixelcnn"])
    with pytest.raises(zspace.ConfigError, match="-n must be"):
        tasks.sample_run(runs["vae"], 0)
    with pytest.raises(zspace.ConfigError, match="conditional models only"):
        tasks.sample_run(runs["vae"], 2, label=1)


def test_sample_reconstruct_and_encode(runs):
    s = tasks.sample_run(runs["vae"], 3, seed=4)
    assert s.x.shape == (3, 1, 8, 8) and torch.equal(s.x, tasks.sample_run(runs["vae"], 3, seed=4).x)
    rec = tasks.reconstruct_run(runs["ae"], n=5)
    assert rec.inputs.shape == rec.outputs.shape == (5, 1, 8, 8)
    codes = tasks.encode_run(runs["vae"])
    assert codes.z.shape == (len(runs["vae"].data().test), 2) and codes.y is not None


def test_denoise_psnr_is_image_quality_psnr(runs):
    res = tasks.denoise_run(runs["ae"], "gaussian", 0.2, limit=30, seed=0)
    assert res.noisy.shape == res.clean.shape == res.denoised.shape
    assert res.psnr["denoised"] == pytest.approx(float(psnr(res.denoised, res.clean).mean()))
    assert set(res.ssim) == {"corrupted input", "denoised"}


def test_score_rows(tmp_path):
    from zspace.detect import AutoencoderOutlierDetector

    rng = np.random.default_rng(0)
    x = rng.random((60, 6)).astype(np.float32)
    det = AutoencoderOutlierDetector(latent_dim=2, hidden=(8,), epochs=1, random_state=0).fit(x)
    y = (np.arange(60) % 10 == 0).astype(int)
    rows = tasks.score_rows(det, x, y)
    assert rows.scores.shape == rows.flags.shape == (60,) and set(rows.separation) >= {"auroc", "auprc"}
    assert rows.csv(y).splitlines()[0] == "row,score,outlier,label"
    with pytest.raises(zspace.ConfigError, match="fitted on 6 features"):
        tasks.score_rows(det, x[:, :4])
