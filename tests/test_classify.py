"""The generative classifier (Bayes' rule, reject option, scikit-learn façade) and DB-VAE resampling."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import check_estimator

from zspace import ConfigError
from zspace.classify import (CombinedRejection, GenerativeClassifier, bayes_posterior, class_log_likelihoods,
                             coverage_threshold, member_scores, selective_accuracy)
from zspace.cli import main
from zspace.data.loader import Batch
from zspace.evaluation.likelihood import importance_sampled_log_likelihood
from zspace.models import build_model
from zspace.models.capabilities import ExactLikelihood
from zspace.models.dbvae import debiasing_weights

MEANS = torch.tensor([[-2.0, 0.0], [1.5, 1.0], [0.5, -2.5]])
SIGMA = 1.2
PRIOR = np.array([0.5, 0.3, 0.2])


class GaussianMixture(torch.nn.Module, ExactLikelihood):
    """p(x | y) = N(MEANS[y], SIGMA^2 I): a class-conditional model whose answers are known."""

    num_classes = 3

    def describe(self):
        return "toy mixture"

    def log_prob(self, x, y=None):
        return torch.distributions.Normal(MEANS[y].double(), SIGMA).log_prob(x.double()).sum(-1)


def blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=PRIOR)
    return MEANS.numpy()[y] + SIGMA * rng.standard_normal((n, 2)), y


def test_bayes_posterior_sums_to_one_and_is_the_exact_answer_on_a_gaussian_mixture():
    x, _ = blobs(200, 0)
    batches = [Batch(torch.from_numpy(x[i:i + 64]), None, np.arange(i, min(i + 64, 200))) for i in range(0, 200, 64)]
    lp, _ = class_log_likelihoods(GaussianMixture(), batches)
    post, log_px = bayes_posterior(lp, np.log(PRIOR))
    # the exact answer, written out: N(x; m, s^2 I) p(y) normalised over y
    d2 = ((x[:, None, :] - MEANS.numpy()[None]) ** 2).sum(-1)
    dens = np.exp(-d2 / (2 * SIGMA ** 2)) / (2 * math.pi * SIGMA ** 2) * PRIOR
    assert np.allclose(post.sum(1), 1.0, atol=1e-12)
    assert np.allclose(post, dens / dens.sum(1, keepdims=True), atol=1e-10)
    assert np.allclose(log_px, np.log(dens.sum(1)), atol=1e-10)


def test_a_cvae_uses_the_importance_sampled_estimate_on_the_same_draws_for_every_class():
    torch.manual_seed(0)
    model = build_model("cvae", dict(input_shape=(1, 4, 4), latent_dim=2, hidden=(8,), num_classes=3)).eval()
    x = torch.rand(5, 1, 4, 4).round()
    lp, _ = class_log_likelihoods(model, [Batch(x, None, np.arange(5))], num_samples=7, seed=3)
    torch.manual_seed(3)
    eps = torch.randn(7, 5, 2)
    for c in range(3):
        want = importance_sampled_log_likelihood(model, x, 7, y=torch.full((5,), c), eps=eps)
        assert np.allclose(lp[:, c], want.numpy())
    assert np.allclose(bayes_posterior(lp, np.log(np.full(3, 1 / 3)))[0].sum(1), 1.0)
    with pytest.raises(ConfigError, match="not class-conditional"):
        class_log_likelihoods(build_model("vae", dict(input_shape=(1, 4, 4), latent_dim=2, hidden=(8,))), [])


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_a_per_class_cvae_is_one_vae_per_class(architecture):
    import dataclasses

    from zspace.models.vae import VAE, VAEConfig

    torch.manual_seed(0)
    opts = dict(input_shape=(1, 8, 8), latent_dim=2, hidden=(8,), channels=(4, 8), architecture=architecture)
    model = build_model("cvae", dict(opts, num_classes=3, per_class=True)).eval()
    assert "one VAE per class" in model.describe()
    x, y = torch.rand(6, 1, 8, 8).round(), torch.tensor([2, 0, 1, 2, 0, 0])
    eps = torch.randn(5, 6, 2)
    mixed = importance_sampled_log_likelihood(model, x, 5, y=y, eps=eps)
    for c in range(3):        # each class's rows are scored by that class's own VAE, in the input's order
        plain = VAEConfig(**{f.name: getattr(model.config, f.name) for f in dataclasses.fields(VAEConfig)})
        alone = VAE(plain, encoder=model.encoder.nets[c], decoder=model.decoder.nets[c]).eval()
        rows = (y == c).nonzero()[:, 0]
        want = importance_sampled_log_likelihood(alone, x[rows], 5, eps=eps[:, rows])
        assert torch.allclose(mixed[rows], want, atol=1e-5)
    before = importance_sampled_log_likelihood(model, x, 5, y=torch.zeros(6, dtype=torch.long), eps=eps)
    with torch.no_grad():
        for p in model.decoder.nets[1].parameters():
            p.add_(1.0)
    assert torch.equal(importance_sampled_log_likelihood(model, x, 5, y=torch.zeros(6, dtype=torch.long), eps=eps), before)
    with pytest.raises(ConfigError, match="per_class"):
        build_model("cvae", dict(opts, num_classes=3, per_class="yes"))


def test_a_gated_pixelcnn_gives_its_exact_log_likelihood_for_every_class():
    torch.manual_seed(0)
    model = build_model("gated-pixelcnn", dict(input_shape=(1, 4, 4), channels=8, residual_blocks=1, head_channels=8,
                                               first_kernel=3, num_classes=3)).eval()
    x = torch.rand(6, 1, 4, 4).round()
    lp, _ = class_log_likelihoods(model, [Batch(x, None, np.arange(6))])
    for c in range(3):
        assert np.allclose(lp[:, c], model.log_prob(x, torch.full((6,), c)).detach().double().numpy())
    assert not np.allclose(lp[:, 0], lp[:, 1])               # the class changes the likelihood


def test_the_threshold_keeps_the_requested_share_of_fresh_held_out_scores():
    rng = np.random.default_rng(0)
    held, fresh = rng.standard_normal(4000), rng.standard_normal(20000)
    for c in (0.5, 0.9, 0.99):
        t = coverage_threshold(held, c)
        assert (held <= t).sum() == math.ceil(c * len(held))
        assert abs((fresh <= t).mean() - c) < 0.02
    assert coverage_threshold(held, 1.0) == math.inf
    for bad in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"coverage must lie in \(0, 1\]"):
            coverage_threshold(held, bad)
    correct = np.array([1, 1, 0, 0], bool)
    assert selective_accuracy(correct, [0.1, 0.2, 0.9, 0.8], (1.0, 0.5)) == [(1.0, 0.5), (0.5, 1.0)]


def test_the_facade_classifies_and_its_reject_option_honours_the_coverage_on_held_out_rows():
    x, y = blobs(1500, 1)
    clf = GenerativeClassifier(latent_dim=2, hidden=(32,), epochs=40, coverage=0.8, random_state=0).fit(x, y)
    xt, yt = blobs(3000, 2)
    proba = clf.predict_proba(xt)
    assert np.allclose(proba.sum(1), 1.0)
    d2 = ((xt[:, None, :] - MEANS.numpy()[None]) ** 2).sum(-1)
    bayes = (np.argmax(-d2 / (2 * SIGMA ** 2) + np.log(PRIOR), 1) == yt).mean()      # the best any classifier does
    assert (clf.predict(xt) == yt).mean() > bayes - 0.03
    kept = clf.accept(xt)
    assert abs(kept.mean() - 0.8) < 0.06                       # the threshold came from the fit's held-out rows
    far = np.array([[12.0, 12.0], [-12.0, 9.0]])
    assert not clf.accept(far).any()
    out = clf.predict_or_reject(np.concatenate([xt[:5], far]), reject_label="?")
    assert list(out[-2:]) == ["?", "?"]


def test_the_facade_passes_scikit_learns_estimator_checks():
    check_estimator(GenerativeClassifier(epochs=8, num_samples=8))


@pytest.mark.parametrize("params", [dict(coverage=0), dict(coverage=1.2), dict(calibration_fraction=1.0),
                                    dict(num_samples=0)])
def test_facade_rejects_bad_parameters(params):
    x, y = blobs(50, 0)
    with pytest.raises(ValueError):
        GenerativeClassifier(epochs=1, **params).fit(x, y)


def test_resampling_weights_are_inverse_to_a_known_histogram_density():
    counts = torch.tensor([[10.0, 20.0, 30.0, 40.0]])            # fractions 0.1 .. 0.4 over [0, 4)
    z = torch.tensor([[0.5], [1.5], [2.5], [3.5], [-7.0]])      # one code in each bin; the last clamps to bin 0
    for alpha in (1e-3, 0.1):
        w = debiasing_weights(z, counts, 0.0, 4.0, alpha).numpy()
        want = 1 / (np.array([0.1, 0.2, 0.3, 0.4, 0.1]) + alpha)
        assert np.allclose(w, want / want.sum(), rtol=1e-6)
    # two dimensions: the paper's product of the per-dimension weights
    counts2 = torch.tensor([[10.0, 30.0], [25.0, 75.0]])
    z2 = torch.tensor([[0.2, 0.2], [0.2, 0.8], [0.8, 0.8]])
    w2 = debiasing_weights(z2, counts2, 0.0, 1.0, 0.01).numpy()
    want2 = np.array([1 / (0.26 * 0.26), 1 / (0.26 * 0.76), 1 / (0.76 * 0.76)])
    assert np.allclose(w2, want2 / want2.sum(), rtol=1e-6)
    for bad in (0, -1.0):
        with pytest.raises(ConfigError, match="alpha must be > 0"):
            debiasing_weights(z, counts, 0.0, 4.0, bad)


def test_dbvae_learns_the_data_histogram_and_resamples_the_rare_kind_more_often():
    torch.manual_seed(0)
    model = build_model("dbvae", dict(input_shape=(2,), latent_dim=1, hidden=(8,), num_classes=2, bins=4,
                                      latent_range=2.0, histogram_momentum=0.0, likelihood="gaussian-fixed"))
    model.train()
    x = torch.randn(100, 2)
    y = torch.zeros(100, dtype=torch.long)
    model(x, y)                                               # one batch: moments and histogram are its own
    mean = model.encode(x).mean.detach()[:, 0]
    assert model.code_mean[0] == pytest.approx(float(mean.mean()), rel=1e-5)
    std = (mean - mean.mean()) / mean.std(unbiased=False)
    idx = torch.clamp(torch.floor((std + 2.0) / 4.0 * 4).long(), 0, 3)
    assert torch.allclose(model.histogram[0], torch.bincount(idx, minlength=4).float() / 100)
    # a common code and a rare one: the rare one is drawn (q_common + a) / (q_rare + a) times as often
    model.histogram.copy_(torch.tensor([[0.0, 0.98, 0.02, 0.0]]))
    model.code_mean.zero_()
    model.code_var.fill_(1.0)
    w = model.latent_weights(torch.tensor([[-0.5], [0.5]]))
    assert float(w[1] / w[0]) == pytest.approx((0.98 + 0.01) / (0.02 + 0.01), rel=1e-5)
    # a training step redraws the batch by these weights: the rare kind fills most of it
    rare = torch.tensor([[0.5]]).expand(10, 1)
    model.code_mean.zero_()
    model.code_var.fill_(1.0)
    picks = torch.multinomial(model.latent_weights(torch.cat([torch.full((90, 1), -0.5), rare])), 10000, True)
    assert (picks >= 90).float().mean() > 0.7                # 10% of the batch, drawn ~77% of the time


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


TRAIN = ["--data", "digits", "--latent-dim", "4", "--hidden", "64", "--epochs", "3", "--batch-size", "64",
         "--eval-limit", "100", "--no-progress"]


def test_member_rejection_scores_orientation_and_their_combination():
    """orientation = NLL(x) minus the lower NLL of the two mirror images, on the same draws; combined =
    the largest member standardised by the reference's median and IQR."""
    torch.manual_seed(0)
    model = build_model("cvae", {"input_shape": (1, 6, 6), "num_classes": 3, "latent_dim": 2, "hidden": (16,)}).eval()
    x = torch.rand(7, 1, 6, 6).round()
    batches = [Batch(x[:4], None, np.arange(4)), Batch(x[4:], None, np.arange(4, 7))]
    prior = np.log(np.full(3, 1 / 3))
    post, _, m = member_scores(model, batches, 5, 3, prior)
    def log_px(imgs):
        return bayes_posterior(class_log_likelihoods(model, [Batch(i, None, np.arange(len(i))) for i in imgs], 5, 3)[0],
                               prior)[1]
    nll = -log_px([x[:4], x[4:]])
    flips = np.maximum(log_px([x[:4].flip(-1), x[4:].flip(-1)]), log_px([x[:4].flip(-2), x[4:].flip(-2)]))
    np.testing.assert_allclose(m["nll"], nll, rtol=1e-12)
    np.testing.assert_allclose(m["orientation"], nll + flips, rtol=1e-12)
    assert post.shape == (7, 3) and set(m) == {"nll", "complexity", "orientation"}
    ref = {k: v[:5] for k, v in m.items()}
    comb = CombinedRejection(ref)
    z = np.column_stack([(m[k] - np.median(ref[k])) / np.subtract(*np.quantile(ref[k], [0.75, 0.25]))
                         for k in ("nll", "complexity", "orientation")])
    np.testing.assert_allclose(comb.score(m), z.max(1), rtol=1e-9)
    with pytest.raises(ConfigError, match="images"):
        member_scores(model, [Batch(x.flatten(1), None, np.arange(7))], 5, 3, prior)


def test_classify_cli_end_to_end_and_its_user_errors(tmp_path, capsys):
    run = tmp_path / "cvae"
    code, out, err = run_cli(capsys, "train", "cvae", *TRAIN, "--num-classes", 10, "--lr", "0.003", "--out", run)
    assert code == 0, err
    code, out, err = run_cli(capsys, "classify", run, "--coverage", 0.9, "--calibrate", 100, "--nll-samples", 5,
                             "--json", tmp_path / "c.json", "--out", tmp_path / "c.csv")
    assert code == 0, err
    res = json.loads((tmp_path / "c.json").read_text())
    assert res["num_examples"] > 100 and res["calibration_examples"] == 100
    assert res["accuracy"] > 0.5                              # 10 classes: chance is 0.1
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert rows[0] == "index,label,kept" and len(rows) == res["num_examples"] + 1
    code, out, err = run_cli(capsys, "classify", run, "--score", "complexity", "--coverage", 0.8, "--calibrate", 50,
                             "--limit", 50, "--nll-samples", 3)
    assert code == 0 and "complexity score" in out and "50 examples" in out, err
    code, out, err = run_cli(capsys, "classify", run, "--score", "combined", "--coverage", 0.8, "--calibrate", 60,
                             "--limit", 40, "--nll-samples", 3, "--json", tmp_path / "k.json")
    assert code == 0 and "combined score" in out, err
    k = json.loads((tmp_path / "k.json").read_text())
    assert k["calibration_examples"] == 60 and 0 < k["accepted"] <= 1
    per_class = tmp_path / "per-class"        # a per-class run is rebuilt from its config.json alone
    assert run_cli(capsys, "train", "cvae", *TRAIN, "--num-classes", 10, "--per-class", "--out", per_class)[0] == 0
    code, out, err = run_cli(capsys, "classify", per_class, "--calibrate", 100, "--nll-samples", 3)
    assert code == 0 and "accuracy" in out, err
    vae = tmp_path / "vae"
    assert run_cli(capsys, "train", "vae", *TRAIN, "--out", vae)[0] == 0
    for argv, message in [((run, "--coverage", 0), "coverage must lie in (0, 1]"),
                          ((run, "--coverage", 1.5), "coverage must lie in (0, 1]"),
                          ((vae,), "not class-conditional")]:
        code, out, err = run_cli(capsys, "classify", *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_train_dbvae_cli_writes_its_weights_figure_and_refuses_bad_input(tmp_path, capsys):
    run = tmp_path / "db"
    code, out, err = run_cli(capsys, "train", "dbvae", *TRAIN, "--preprocess", "scale", "--out", run)
    assert code == 0, err
    assert (run / "figures" / "debias_weights.png").stat().st_size > 1000
    x = np.random.default_rng(0).random((40, 4, 4)).astype(np.float32)
    np.save(tmp_path / "unlabelled.npy", x)
    for argv, message in [(("--data", "digits", "--alpha", 0), "alpha must be a positive"),
                          (("--data", "digits", "--alpha", -1), "alpha must be a positive"),
                          (("--data", "digits", "--debias-class", 10), "debias_class must be a class index"),
                          (("--data", tmp_path / "unlabelled.npy"), "needs labels")]:
        code, out, err = run_cli(capsys, "train", "dbvae", "--epochs", 1, "--no-progress", *argv,
                                 "--out", tmp_path / "bad")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_dbvae_reweighting_weights_each_loss_by_its_inverse_latent_density():
    torch.manual_seed(0)
    options = dict(input_shape=(2,), latent_dim=1, hidden=(8,), num_classes=2, bins=4, latent_range=2.0,
                   histogram_momentum=0.0, likelihood="gaussian-fixed", sampling="reweight")
    model = build_model("dbvae", options)
    model.train()
    x, y = torch.randn(50, 2), torch.randint(0, 2, (50,))
    model(x, y)                                               # fills the histogram from this batch
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        w = model.latent_weights(model.encode(x).mean)
    assert float(w.max() / w.min()) > 1.5                     # the batch's codes are not all equally common
    torch.manual_seed(1)
    weighted = model(x, y).loss
    model.load_state_dict(state)
    model.config = dataclasses.replace(model.config, debias=False)   # the same step, uniform weights
    torch.manual_seed(1)
    terms = model(x, y).terms
    per = terms["ce"] - (terms["rec"] - terms["kl"]) / 2
    assert float(weighted) == pytest.approx(float((per * w * len(x)).mean()), rel=1e-5)
    assert float(weighted) != pytest.approx(float(per.mean()), rel=1e-3)
    with pytest.raises(ConfigError, match="sampling must be one of"):
        build_model("dbvae", {**options, "sampling": "oversample"})


def test_dbvae_debias_class_learns_and_evens_out_only_that_class():
    torch.manual_seed(0)
    options = dict(input_shape=(2,), latent_dim=1, hidden=(8,), num_classes=2, bins=4, latent_range=2.0,
                   histogram_momentum=0.0, likelihood="gaussian-fixed", sampling="reweight", debias_class=1)
    model = build_model("dbvae", options)
    model.train()
    x, y = torch.randn(60, 2), (torch.arange(60) % 3 == 0).long()      # 20 of class 1
    model(x, y)
    with torch.no_grad():
        mean = model.encode(x).mean[y == 1, 0]
    assert model.code_mean[0] == pytest.approx(float(mean.mean()), rel=1e-5)   # class 1's codes only
    assert float(model.histogram.sum()) == pytest.approx(1.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        w = model.latent_weights(model.encode(x[y == 1]).mean)
    torch.manual_seed(1)
    weighted = model(x, y).loss
    model.load_state_dict(state)
    model.config = dataclasses.replace(model.config, debias=False)
    torch.manual_seed(1)
    terms = model(x, y).terms
    per = terms["ce"] - (terms["rec"] - terms["kl"]) / 2 * (y == 1)     # the VAE term on class 1 only
    weight = torch.ones(60)
    weight[y == 1] = w * 20                                  # mean 1 over class 1; class 0 keeps 1
    assert float(weighted) == pytest.approx(float((per * weight).mean()), rel=1e-5)
    for bad in (2, -1):
        with pytest.raises(ConfigError, match="debias_class must be a class index"):
            build_model("dbvae", {**options, "debias_class": bad})
