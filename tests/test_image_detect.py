"""The image detector: statistics of a trained run, fitted on training images only."""
import numpy as np
import pytest

import zspace
from zspace import ConfigError, DataError
from zspace.data.shapes import Shapes
from zspace.detect import load_detector, save_detector
from zspace.evaluation import outliers as O
from zspace.image_detect import ImageOutlierDetector


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    digits = zspace.load_dataset("digits")
    config = zspace.TrainConfig(epochs=15, batch_size=64, lr=3e-3, eval_limit=100)
    vae = zspace.train("vae", digits, out=root / "vae", config=config, progress=False, figures=False,
                       latent_dim=4, hidden=(64,))
    ae = zspace.train("ae", digits, out=root / "ae", config=config.replace(epochs=2), progress=False,
                      figures=False, latent_dim=4, hidden=(32,))
    return digits, vae, ae


def shapes8(n=300):
    """Unseen images: procedural shapes at the digits' 8x8."""
    s = Shapes(size=8)
    idx = np.random.default_rng(0).choice(len(s), n, replace=False)
    return s.render(s.factors_of(idx))


def test_default_score_flags_unseen_shapes_and_inverted_digits(runs):
    digits, vae, _ = runs
    det = ImageOutlierDetector.from_run(vae).fit(digits.train.x)
    assert det.members == ("nll", "complexity", "reconstruction", "mahalanobis", "orientation")
    inliers = det.decision_function(digits.test.x)
    for outliers in (shapes8(), 255 - digits.test.x):
        scores = det.decision_function(outliers)
        y = np.r_[np.zeros(len(inliers), int), np.ones(len(scores), int)]
        assert O.auroc(y, np.r_[inliers, scores]) > 0.95
    assert det.labels_.mean() == pytest.approx(0.1, abs=0.01)          # contamination on training images
    assert det.predict(digits.test.x).mean() < 0.3
    assert np.array_equal(det.decision_function(digits.test.x), inliers)  # deterministic
    # the same images as flattened floats in [0, 1] (what the CLI passes) score the same
    flat = digits.test.x.reshape(len(digits.test.x), -1) / 255.0
    assert np.allclose(det.decision_function(flat), inliers)


def test_orientation_score_is_the_nll_minus_the_likelier_flip_and_flags_mirrored_digits(runs):
    digits, vae, _ = runs
    det = ImageOutlierDetector.from_run(vae, score_type="orientation", num_samples=8).fit(digits.train.x)
    x = digits.test.x
    st = det.statistics(x)
    assert np.array_equal(det.member_scores(st)[:, 0], st["nll"] - st["nll_flipped"])
    # the flipped NLL is the lower of the two mirror images' (other Monte-Carlo draws: close, not equal)
    nll = ImageOutlierDetector.from_run(vae, score_type="nll", num_samples=8)
    want = np.minimum(nll.statistics(x[..., ::-1])["nll"], nll.statistics(x[..., ::-1, :])["nll"])
    assert np.corrcoef(want, st["nll_flipped"])[0, 1] > 0.98 and np.median(np.abs(want - st["nll_flipped"])) < 1.0
    inliers, raw = det.decision_function(x), st["nll"]
    assert np.median(inliers) < 0                       # the model prefers digits the right way round
    for flipped in (x[..., ::-1], x[..., ::-1, :]):
        flipped = np.ascontiguousarray(flipped)
        y = np.r_[np.zeros(len(inliers), int), np.ones(len(flipped), int)]
        got = O.auroc(y, np.r_[inliers, det.decision_function(flipped)])
        plain = O.auroc(y, np.r_[raw, det.statistics(flipped)["nll"]])
        assert got > 0.75 and got > plain + 0.1         # pairing each image with its mirror beats raw NLL


def test_combined_is_the_larger_standardised_of_the_gaussian_distance_and_orientation(runs, tmp_path):
    digits, vae, _ = runs
    det = ImageOutlierDetector.from_run(vae, num_samples=8).fit(digits.train.x)
    x = np.ascontiguousarray(digits.test.x[..., ::-1])
    s = det.member_scores(det.statistics(x))
    d = O.ScoreCombination.fit(det.member_scores(det.statistics(digits.train.x))[:, :4], "gaussian").score(s[:, :4])
    z = (np.column_stack([d, s[:, 4]]) - det.either_.center) / det.either_.scale
    np.testing.assert_allclose(det.decision_function(x), z.max(1), rtol=1e-9)
    assert np.allclose(det.either_.center[0], np.median(det.combination_.score(
        det.member_scores(det.statistics(digits.train.x))[:, :4])))
    # a detector saved with the earlier four members (no orientation) still loads and scores as saved
    old = ImageOutlierDetector.from_run(vae, num_samples=8)
    old.members = old.members[:4]
    old.fit(digits.train.x)
    back = load_detector(save_detector(old, tmp_path / "old"))
    assert back.members == old.members and back.either_ is None
    assert np.array_equal(back.decision_function(shapes8(50)), old.decision_function(shapes8(50)))


def test_saved_image_detector_scores_exactly_as_fitted(runs, tmp_path):
    digits, vae, ae = runs
    for det in (ImageOutlierDetector.from_run(vae, num_samples=8),
                ImageOutlierDetector.from_run(vae, score_type="typicality", num_samples=8),
                ImageOutlierDetector.from_run(ae)):
        det.fit(digits.train.x)
        back = load_detector(save_detector(det, tmp_path / "det"))
        assert isinstance(back, ImageOutlierDetector) and back.members == det.members
        assert back.threshold_ == det.threshold_
        assert np.array_equal(back.decision_function(shapes8(50)), det.decision_function(shapes8(50)))


def test_image_detector_refuses_bad_input(runs):
    digits, vae, ae = runs
    det = ImageOutlierDetector.from_run(vae, num_samples=4).fit(digits.train.x[:200])
    with pytest.raises(DataError, match="reads images of 1x8x8"):
        det.decision_function(np.zeros((3, 1, 28, 28), np.uint8))
    with pytest.raises(DataError, match="floats in"):
        det.decision_function(np.full((3, 1, 8, 8), 2.0))
    with pytest.raises(ConfigError, match="needs a model with a likelihood"):
        ImageOutlierDetector.from_run(ae, score_type="nll")
    with pytest.raises(ConfigError, match="background model"):
        ImageOutlierDetector.from_run(vae, score_type="likelihood-ratio")
    with pytest.raises(ConfigError, match="unknown image score"):
        ImageOutlierDetector.from_run(vae, score_type="magic")
    with pytest.raises(ConfigError, match="not fitted"):
        ImageOutlierDetector.from_run(vae).decision_function(digits.test.x)
    assert ImageOutlierDetector.from_run(ae).members == ("reconstruction", "mahalanobis")


def test_detect_cli_on_a_run(runs, tmp_path, capsys):
    from zspace.cli import main

    digits, vae, ae = runs
    np.save(tmp_path / "shapes.npy", shapes8(100))
    np.save(tmp_path / "big.npy", np.zeros((40, 1, 28, 28), np.uint8))
    det = tmp_path / "det"
    assert main(["detect", "fit", "--run", str(vae.path), "--num-samples", "8", "--out", str(det)]) == 0
    assert "flags 10.0%" in capsys.readouterr().out
    assert main(["detect", "score", str(det), "--data", str(tmp_path / "shapes.npy"),
                 "--out", str(tmp_path / "s.csv")]) == 0
    rows = np.genfromtxt(tmp_path / "s.csv", delimiter=",", names=True)
    assert len(rows) == 100 and rows["outlier"].mean() > 0.9
    for argv, message in ((["detect", "score", str(det), "--data", str(tmp_path / "big.npy"), "--out",
                            str(tmp_path / "t.csv")], "reads images of 1x8x8"),
                          (["detect", "fit", "--run", str(ae.path), "--score", "nll", "--out",
                            str(tmp_path / "d2")], "needs a model with a likelihood"),
                          (["detect", "fit", "--out", str(tmp_path / "d3")], "needs --data")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_score_combination_is_fitted_on_training_scores_only():
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    train = np.c_[a, a + 0.1 * rng.normal(size=500)]          # two correlated statistics
    mean = O.ScoreCombination.fit(train, "mean")
    gauss = O.ScoreCombination.fit(train, "gaussian")
    assert abs(np.median(mean.score(train))) < 0.1
    # a row where the two disagree is abnormal for the Gaussian, not for the mean
    odd = np.array([[1.0, -1.0]])
    assert gauss.score(odd)[0] > np.quantile(gauss.score(train), 0.999)
    assert mean.score(odd)[0] < np.quantile(mean.score(train), 0.9)
    with pytest.raises(ConfigError, match="unknown combination"):
        O.ScoreCombination.fit(train, "max")
    with pytest.raises(DataError, match=r"need \(N, 2\)"):
        gauss.score(np.zeros((3, 3)))
