"""Outlier scores, separation metrics and the detector façades."""
import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import check_estimator

import zspace
from zspace import ConfigError, DataError
from zspace.data.corruptions import Mutation
from zspace.data.loader import Batch
from zspace.detect import AutoencoderOutlierDetector, GenerativeOutlierDetector, VAEOutlierDetector
from zspace.evaluation import outliers as O


def blobs(n_in=400, n_out=40, far=8.0, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(n_in, d)), rng.normal(size=(n_out, d)) + far])
    y = np.r_[np.zeros(n_in, int), np.ones(n_out, int)]
    return x.astype(np.float32), y


def test_separation_metrics_on_known_cases():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(5000, int), np.ones(5000, int)]
    same = rng.normal(size=10000)
    assert O.auroc(y, same) == pytest.approx(0.5, abs=0.02)
    assert O.fpr_at_tpr(y, same) == pytest.approx(0.95, abs=0.02)
    apart = np.r_[rng.normal(size=5000), rng.normal(size=5000) + 10]
    assert O.auroc(y, apart) > 0.999 and O.auprc(y, apart) > 0.999 and O.fpr_at_tpr(y, apart) < 0.001
    with pytest.raises(DataError, match="both 0"):
        O.auroc(np.zeros(4), np.arange(4.0))
    with pytest.raises(DataError, match="labels but"):
        O.auroc(np.r_[0, 1], np.arange(3.0))


@pytest.mark.parametrize("make", [lambda: AutoencoderOutlierDetector(epochs=30, random_state=0),
                                  lambda: VAEOutlierDetector(epochs=30, random_state=0),
                                  lambda: VAEOutlierDetector("mahalanobis", epochs=30, random_state=0)])
def test_detectors_find_far_outliers_and_respect_contamination(make):
    x, y = blobs()
    det = make().fit(x[y == 0])
    assert O.auroc(y, det.decision_function(x)) > 0.99
    assert det.predict(x[y == 0]).mean() == pytest.approx(0.1, abs=0.01)     # contamination 0.1
    assert np.array_equal(det.labels_, det.predict(x[y == 0]))
    assert np.allclose(det.score_samples(x), -det.decision_function(x))
    assert det.predict(x[y == 1]).mean() == 1.0
    on_same = make().fit(x[:200]).decision_function(x[200:400])            # inliers vs inliers
    assert 0.3 < O.auroc(np.r_[np.zeros(100), np.ones(100)], on_same) < 0.7


def test_contamination_sets_the_flagged_fraction():
    x, _ = blobs(n_out=0)
    for c in (0.02, 0.25, 0.5):
        det = VAEOutlierDetector("elbo", epochs=5, contamination=c, random_state=0).fit(x)
        assert det.labels_.mean() == pytest.approx(c, abs=0.005)


def test_scores_are_deterministic_per_row():
    x, _ = blobs()
    det = VAEOutlierDetector(epochs=5, num_samples=8, random_state=0).fit(x)
    full = det.decision_function(x)
    perm = np.random.default_rng(1).permutation(len(x))
    # the same noise per row; only BLAS's blocking may move the last bits
    assert np.allclose(det.decision_function(x[perm]), full[perm], rtol=1e-6, atol=0)
    assert np.allclose(det.decision_function(x[:7]), full[:7], rtol=1e-6, atol=0)
    other_seed = VAEOutlierDetector(epochs=5, num_samples=8, random_state=1).fit(x).decision_function(x)
    assert not np.allclose(other_seed, full, rtol=1e-3)


def test_passes_scikit_learn_estimator_checks():
    check_estimator(VAEOutlierDetector(epochs=2, num_samples=4))
    check_estimator(AutoencoderOutlierDetector(epochs=2))
    check_estimator(VAEOutlierDetector(("nll", "mahalanobis"), epochs="auto", num_samples=4))
    check_estimator(VAEOutlierDetector(("nll", "isolation"), epochs=2, num_samples=4))


@pytest.mark.parametrize("n, d", [(300, 5), (40, 2), (1500, 9)])
def test_isolation_scores_equal_scikit_learns_forest(n, d):
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(n)
    x, probe = rng.standard_t(3, size=(n, d)), 2 * rng.standard_t(3, size=(200, d))
    ours = O.IsolationScores.fit(x, seed=3)
    assert np.allclose(ours.score(probe), -IsolationForest(random_state=3).fit(x).score_samples(probe), atol=1e-12)
    assert np.allclose(O.average_path_length([1, 2, 256]), [0.0, 1.0, 2 * (np.log(255) + np.euler_gamma) - 2 * 255 / 256])


def test_combined_scores_auto_epochs_and_rescoring():
    from zspace.detect import auto_epochs

    assert auto_epochs(100, 128) == 500 and auto_epochs(5000, 128) == 20 and auto_epochs(1000, 128) == 63
    x, y = blobs()
    det = VAEOutlierDetector(("nll", "mahalanobis"), epochs="auto", num_samples=8, random_state=0).fit(x[y == 0])
    assert det.epochs_ == auto_epochs(400, 128)
    combined = det.decision_function(x)
    assert O.auroc(y, combined) > 0.99
    assert det.labels_.mean() == pytest.approx(0.1, abs=0.01)
    # the combination is the mean of the members standardised on the training rows
    members = np.column_stack([det.rescore(s, x[y == 0]).decision_function(x) for s in ("nll", "mahalanobis")])
    train = np.column_stack([det.rescore(s, x[y == 0]).decision_scores_ for s in ("nll", "mahalanobis")])
    q1, med, q3 = np.quantile(train, (0.25, 0.5, 0.75), axis=0)
    assert np.allclose(((members - med) / (q3 - q1)).mean(1), combined)
    assert np.allclose(det.rescore(("nll", "mahalanobis"), x[y == 0]).decision_function(x), combined)
    with pytest.raises(ValueError, match="distinct scores"):
        det.rescore(("nll", "nll"), x[y == 0])
    with pytest.raises(ValueError, match="epochs must be"):
        VAEOutlierDetector(epochs="many").fit(x)


@pytest.mark.parametrize("make, fit_x, message", [
    (lambda: VAEOutlierDetector(contamination=0.6), None, "contamination"),
    (lambda: VAEOutlierDetector(contamination=0.0), None, "contamination"),
    (lambda: VAEOutlierDetector(score_type="magic"), None, "unknown score"),
    (lambda: AutoencoderOutlierDetector(score_type="nll"), None, "needs a likelihood"),
    (lambda: AutoencoderOutlierDetector(score_type=("reconstruction", "elbo")), None, "needs a likelihood"),
    (lambda: VAEOutlierDetector(score_type=("nll", "magic")), None, "unknown score"),
    (lambda: GenerativeOutlierDetector(model="pixelcnn"), None, "model must be"),
    (lambda: VAEOutlierDetector(), np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN"),
    (lambda: VAEOutlierDetector(), np.empty((0, 3)), "0 sample"),
])
def test_bad_parameters_and_inputs(make, fit_x, message):
    x = fit_x if fit_x is not None else blobs(n_out=0)[0]
    with pytest.raises(ValueError, match=message):
        make().set_params(epochs=1).fit(x)


def test_wrong_feature_count_at_score_time():
    x, _ = blobs(n_out=0)
    det = AutoencoderOutlierDetector(epochs=1).fit(x)
    with pytest.raises(ValueError, match="features"):
        det.decision_function(x[:, :3])


def test_mutation_replaces_the_stated_fraction():
    g = torch.Generator().manual_seed(0)
    x = torch.full((200, 1, 28, 28), 0.5)
    out = Mutation(0.3)(x, g)
    changed = (out != x).float().mean()
    assert changed == pytest.approx(0.3 * 255 / 256, abs=0.01)   # a draw of 0.5 itself is impossible (k/255)
    levels = out[out != x] * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ConfigError, match="mutation rate"):
        Mutation(1.5)


def test_background_model_trains_on_mutated_inputs(monkeypatch):
    m = zspace.VAE(zspace.VAEConfig(input_shape=(64,), latent_dim=2, hidden=(8,), input_mutation=0.2))
    seen = []
    real = m.elbo_terms
    monkeypatch.setattr(m, "elbo_terms", lambda x, y=None: (seen.append(x), real(x, y))[1])
    x = torch.zeros(100, 64)
    m.train()
    m.loss(x)
    assert float((seen[-1] != 0).float().mean()) == pytest.approx(0.2 * 255 / 256, abs=0.02)
    m.eval()
    m.loss(x)
    assert torch.equal(seen[-1], x)                      # evaluation sees the data as they are
    with pytest.raises(ConfigError, match="input_mutation"):
        zspace.VAEConfig(input_mutation=-0.1)


@pytest.mark.parametrize("head, values", [("bernoulli", {0.0, 1.0}), ("categorical", set(map(float, range(256))))])
def test_pixelcnn_background_model_mutates_within_its_value_space(monkeypatch, head, values):
    m = zspace.PixelCNN(zspace.PixelCNNConfig(input_shape=(1, 8, 8), head=head, channels=4, residual_blocks=0,
                                              head_channels=4, input_mutation=0.5))
    seen = []
    real = m.log_prob
    monkeypatch.setattr(m, "log_prob", lambda x, y=None: (seen.append(x), real(x, y))[1])
    x = torch.zeros(200, 1, 8, 8)
    m.train()
    m.loss(x)
    hit = seen[-1] != x
    assert float(hit.float().mean()) == pytest.approx(0.5 * (1 - 1 / len(values)), abs=0.02)
    assert set(seen[-1].unique().tolist()) <= values and len(set(seen[-1].unique().tolist())) > len(values) // 2
    m.eval()
    m.loss(x)
    assert torch.equal(seen[-1], x)
    with pytest.raises(ConfigError, match="input_mutation"):
        zspace.PixelCNNConfig(input_mutation=2.0)


def test_exact_nll_score_is_minus_log_prob_and_needs_an_autoregressive_model():
    torch.manual_seed(0)
    m = zspace.PixelCNN(zspace.PixelCNNConfig(input_shape=(1, 8, 8), channels=4, residual_blocks=1, head_channels=4))
    x = (torch.rand(10, 1, 8, 8) > 0.5).float()
    batches = [Batch(x[:6], None, np.arange(6)), Batch(x[6:], None, np.arange(6, 10))]
    got = O.exact_nll(m, batches)
    with torch.no_grad():
        assert np.allclose(got, -m.log_prob(x).double().numpy())
    assert got.shape == (10,) and (got > 0).all()
    with pytest.raises(ConfigError, match="log_prob"):
        O.exact_nll(zspace.VAE(zspace.VAEConfig(input_shape=(64,), latent_dim=2, hidden=(8,))),
                    [Batch(torch.rand(2, 64), None, np.arange(2))])


def test_png_code_length_and_complexity():
    blank = np.zeros((2, 28, 28), np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, size=(2, 28, 28), dtype=np.uint8)
    b, n = O.png_bits(blank), O.png_bits(noise)
    assert (b > 0).all() and (n > 4 * b).all() and n[0] > 28 * 28 * 7    # noise is incompressible
    assert np.allclose(O.png_bits(blank[:, None] / 255.0), b)             # floats in [0, 1], channel axis
    s = O.complexity_corrected(np.array([100.0, 100.0]), np.r_[b[0], n[0]])
    assert s[0] > s[1]                                                  # same NLL, simpler image: more suspicious
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        O.png_bits(np.full((1, 4, 4), 2.0))


def test_typicality_and_latent_gaussian():
    rng = np.random.default_rng(0)
    train = rng.normal(100, 5, size=2000)
    assert O.typicality(np.r_[100.0, 80.0], train)[1] == pytest.approx(20, abs=0.5)
    flagged, stat, thr = O.typicality_test(rng.normal(100, 5, size=50), train)
    assert not flagged and stat < thr
    assert O.typicality_test(np.full(50, 90.0), train)[0]                # too likely is atypical too
    lg = O.LatentGaussian(rng.normal(size=(500, 3)))
    assert lg.score(np.zeros((1, 3)))[0] < 0.2 and lg.score(np.full((1, 3), 5.0))[0] > 7
    with pytest.raises(DataError, match="more codes than dimensions"):
        O.LatentGaussian(np.zeros((3, 3)))


def test_model_scores_on_batches(digits):
    run = zspace.train("vae", digits, config=zspace.TrainConfig(epochs=1, batch_size=64, eval_limit=50),
                       progress=False, latent_dim=3, hidden=(16,))
    loader = run.loader("test", 100, limit=150)
    for norm in O.NORMS:
        r = O.reconstruction_scores(run.model, loader.epoch(0), norm)
        assert r.shape == (150,) and (r >= 0).all()
    torch.manual_seed(0)
    nelbo = O.negative_elbo(run.model, loader.epoch(0))
    nll = O.importance_sampled_nll(run.model, loader.epoch(0), 50)
    assert nll.mean() <= nelbo.mean() + 1.0
    assert np.allclose(O.likelihood_ratio(nll, nll), 0)


def test_detect_cli_fit_and_score(tmp_path, capsys):
    from zspace.cli import main

    x, y = blobs(n_in=300, n_out=30)
    np.savez(tmp_path / "rows.npz", x=x, y=y)
    np.save(tmp_path / "inliers.npy", x[y == 0])
    det = tmp_path / "det"
    assert main(["detect", "fit", "--data", str(tmp_path / "inliers.npy"), "--epochs", "20",
                 "--contamination", "0.1", "--out", str(det)]) == 0
    out = capsys.readouterr().out
    assert "flags 10.0%" in out and (det / "detector.json").is_file()
    assert main(["detect", "fit", "--data", str(tmp_path / "inliers.npy"), "--epochs", "3", "--score",
                 "nll+mahalanobis", "--out", str(tmp_path / "combined")]) == 0
    assert "score nll+mahalanobis, 3 epochs" in capsys.readouterr().out
    assert main(["detect", "score", str(det), "--data", str(tmp_path / "rows.npz"), "--out", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    auroc = float(out.split("AUROC ")[1].split(",")[0])
    assert auroc > 0.99
    rows = np.genfromtxt(tmp_path / "s.csv", delimiter=",", names=True)
    assert len(rows) == 330 and set(rows.dtype.names) == {"row", "score", "outlier", "label"}
    assert rows["label"].sum() == 30 and rows["outlier"][rows["label"] == 1].all()
    assert rows["outlier"][rows["label"] == 0].mean() == pytest.approx(0.1, abs=0.02)
    # errors: one line, exit 2
    np.save(tmp_path / "narrow.npy", x[:, :3])
    for argv, message in ((["detect", "score", str(det), "--data", str(tmp_path / "narrow.npy"), "--out",
                            str(tmp_path / "t.csv")], "fitted on 5 features"),
                          (["detect", "fit", "--data", str(tmp_path / "rows.npz"), "--contamination", "0.7",
                            "--out", str(tmp_path / "d2")], "contamination must lie in (0, 0.5]"),
                          (["detect", "score", str(tmp_path), "--data", str(tmp_path / "rows.npz"), "--out",
                            str(tmp_path / "t.csv")], "not a saved detector"),
                          (["detect", "fit", "--data", str(tmp_path / "rows.npz"), "--epochs", "many",
                            "--out", str(tmp_path / "d2")], "epochs must be an integer >= 1 or 'auto'"),
                          (["detect", "fit", "--data", str(tmp_path / "rows.npz"), "--score", "nll+magic",
                            "--out", str(tmp_path / "d2")], "unknown score 'magic'")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_saved_detector_scores_exactly_as_fitted(tmp_path):
    from zspace.detect import load_detector, save_detector

    x, _ = blobs()
    for det in (VAEOutlierDetector(epochs=3, num_samples=8, random_state=0),
                VAEOutlierDetector("elbo", epochs=3, num_samples=8, scaling="quantile", random_state=0),
                VAEOutlierDetector("typicality", epochs=3, num_samples=8, scaling="minmax", random_state=0),
                VAEOutlierDetector(("nll", "typicality", "mahalanobis"), epochs="auto", num_samples=8, random_state=0),
                VAEOutlierDetector(("nll", "isolation"), epochs=3, num_samples=8, random_state=0),
                AutoencoderOutlierDetector("mahalanobis", epochs=3, random_state=0)):
        det.fit(x)
        back = load_detector(save_detector(det, tmp_path / "d"))
        assert type(back) is type(det) and back.get_params() == det.get_params()
        assert np.array_equal(back.decision_function(x), det.decision_function(x))
        assert back.threshold_ == det.threshold_


@pytest.mark.parametrize("damage", ["cycle", "feature", "missing"])
def test_a_damaged_isolation_forest_is_refused_in_one_line(tmp_path, damage):
    from safetensors.numpy import load_file, save_file

    from zspace.detect import load_detector, save_detector
    from zspace.errors import CheckpointError

    x, _ = blobs(n_in=200, n_out=0)
    path = save_detector(VAEOutlierDetector(("nll", "isolation"), epochs=2, num_samples=4, random_state=0).fit(x),
                         tmp_path / "d")
    arrays = load_file(path / "fitted.safetensors")
    if damage == "cycle":          # a child pointing back at the root would walk forever
        arrays["isolation_left"][0, 1] = 0
    elif damage == "feature":
        arrays["isolation_feature"][0, 0] = 99
    else:
        del arrays["isolation_threshold"]
    save_file(arrays, path / "fitted.safetensors")
    with pytest.raises(CheckpointError, match="isolation forest"):
        load_detector(path)


@pytest.mark.parametrize("kind", ["power", "standard", "quantile"])
def test_scalings_log_jacobian_is_the_log_derivative_of_the_map(kind):
    from zspace.detect import _Scaling

    rng = np.random.default_rng(0)
    x = np.c_[rng.lognormal(size=400), 3 * rng.normal(size=400) - 1, rng.exponential(size=400) - 0.5]
    s = _Scaling.fit(kind, x)
    probe = np.c_[rng.uniform(0.5, 3, 50), rng.uniform(-4, 2, 50), rng.uniform(-0.4, 2, 50)]
    h = 1e-6
    numeric = np.log((s._map(probe + h) - s._map(probe - h)) / (2 * h)).sum(1)
    got = s.log_jacobian(probe)
    assert np.isfinite(got).all()
    if kind == "quantile":          # piecewise linear: differenced over a wider step, so near knots it averages
        assert np.median(np.abs(got - numeric)) < 0.1
    else:
        assert np.allclose(got, numeric, atol=1e-5)
    if kind == "power":                                 # Yeo-Johnson + standardising, as scikit-learn's
        from sklearn.preprocessing import PowerTransformer
        assert np.allclose(s.transform(x), PowerTransformer().fit(x).transform(x), atol=1e-4)


def test_likelihood_scores_are_of_the_features_as_given():
    # the same rows in other units: -log p(x) shifts by the constant log of the unit change
    x, _ = blobs(n_out=0)
    a = VAEOutlierDetector("nll", epochs=2, num_samples=8, scaling="standard", random_state=0).fit(x)
    b = VAEOutlierDetector("nll", epochs=2, num_samples=8, scaling="standard", random_state=0).fit(10 * x)
    shift = b.decision_scores_ - a.decision_scores_     # rows' bytes differ, so do their Monte-Carlo draws
    assert abs(shift.mean() - x.shape[1] * np.log(10)) < 0.05 and shift.std() < 0.5


def test_fpr_at_tpr_matches_the_roc_curve():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(300, int), np.ones(100, int)]
    s = np.r_[rng.normal(size=300), rng.normal(size=100) + 1.5]
    fpr, tpr, _ = roc_curve(y, s)
    assert O.fpr_at_tpr(y, s) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])


def test_model_scores_name_what_they_need():
    ae = zspace.Autoencoder(zspace.AutoencoderConfig(input_shape=(4,), latent_dim=2, hidden=(8,)))
    with pytest.raises(ConfigError, match=r"elbo_terms\(\) \(a VAE\)"):
        O.negative_elbo(ae, [])
