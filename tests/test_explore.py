"""Latent-space tools, the conditional VAE, the explore CLI and the HTML report."""
import numpy as np
import pytest
import torch
from scipy.stats import norm

import zspace
from zspace import ConfigError, DataError
from zspace.cli import main
from zspace.explore import (apply_attribute, attribute_vector, class_pair_mask, interpolate, inverse_cdf_grid,
                            manifold, per_dimension_activity, traverse)
from zspace.report.page import slug

from .browser import SKIP_REASON, chromium_binary, open_in_chromium
from .conftest import tiny_config


class Recording(zspace.VAE):
    """A VAE that remembers the codes it was asked to decode."""

    def decode_mean(self, z, y=None):
        self.seen = z.clone()
        return super().decode_mean(z, y)


def recording_vae(latent_dim=4):
    return Recording(zspace.VAEConfig(input_shape=(1, 8, 8), latent_dim=latent_dim, hidden=(16,)))


def test_traversal_changes_only_the_chosen_dimension():
    m = recording_vae()
    z0 = torch.tensor([0.5, -1.0, 2.0, 0.0])
    values = torch.tensor([-2.0, 0.0, 3.0])
    out = traverse(m, [1, 3], values, z0=z0)
    assert out.shape == (2, 3, 1, 8, 8)
    seen = m.seen.reshape(2, 3, 4)
    for row, d in enumerate([1, 3]):
        others = [i for i in range(4) if i != d]
        assert torch.equal(seen[row][:, others], z0[others].expand(3, 3))
        assert torch.equal(seen[row][:, d], values)
    # the decoded rows really differ along the sweep
    assert not torch.allclose(out[0, 0], out[0, 2])


def test_inverse_cdf_grid_and_manifold_layout():
    g = inverse_cdf_grid(5, margin=0.05)
    assert np.allclose(g.numpy(), norm.ppf(np.linspace(0.05, 0.95, 5)), atol=1e-6)
    assert float(g[2]) == pytest.approx(0.0, abs=1e-7)
    m = recording_vae(latent_dim=2)
    out = manifold(m, n=5)
    assert out.shape == (5, 5, 1, 8, 8)
    z = m.seen.reshape(5, 5, 2)
    assert torch.allclose(z[0, :, 0], g) and torch.allclose(z[:, 0, 1], g.flip(0))   # across: z0; up: z1
    m4 = recording_vae(latent_dim=4)
    manifold(m4, n=3, plane=(2, 0), z0=torch.ones(4))
    z = m4.seen.reshape(3, 3, 4)
    assert torch.all(z[..., 1] == 1) and torch.all(z[..., 3] == 1)


def test_slerp_endpoints_and_norms():
    torch.manual_seed(0)
    a, b = torch.randn(16), torch.randn(16)
    b = b / b.norm() * a.norm()
    for method in ("linear", "slerp"):
        path = interpolate(a, b, 7, method)
        assert torch.allclose(path[0], a, atol=1e-6) and torch.allclose(path[-1], b, atol=1e-6)
    norms = interpolate(a, b, 7, "slerp").norm(dim=1)
    assert torch.allclose(norms, a.norm().expand(7), rtol=1e-5)           # stays on the sphere
    assert interpolate(a, b, 7, "linear").norm(dim=1)[3] < 0.95 * a.norm()  # the linear midpoint shrinks


def test_attribute_vector_recovers_a_known_direction():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=8)
    direction /= np.linalg.norm(direction)
    has = rng.random(4000) < 0.3
    codes = rng.normal(size=(4000, 8)) + 2.5 * has[:, None] * direction
    v = attribute_vector(codes, has).numpy()
    assert np.dot(v, direction) / np.linalg.norm(v) > 0.99 and np.linalg.norm(v) == pytest.approx(2.5, rel=0.05)
    m = recording_vae()
    x = torch.rand(3, 1, 8, 8)
    out = apply_attribute(m, x, torch.ones(4), strengths=(0, 2))
    assert out.shape == (3, 2, 1, 8, 8)
    moved = m.seen.reshape(3, 2, 4)
    assert torch.allclose(moved[:, 1] - moved[:, 0], torch.full((3, 4), 2.0))
    mask, keep = class_pair_mask(np.array([1, 7, 3, 1, 7]), 1, 7)
    assert keep.tolist() == [True, True, False, True, True] and mask.tolist() == [True, False, True, False]


def test_activity_matches_the_kl(digits):
    run = zspace.train("vae", digits, config=tiny_config(epochs=1), progress=False, latent_dim=3, hidden=(16,))
    loader = run.loader("test", 100)
    act = per_dimension_activity(run.model, loader.epoch(0))
    with torch.no_grad():
        kl = torch.cat([run.model.encode(b.x).kl_standard_normal() for b in loader.epoch(0)]).mean()
    assert act.kl.sum() == pytest.approx(float(kl), rel=1e-5)
    assert act.num_examples == len(digits.test) and act.variance.shape == (3,)
    assert list(act.ranked()) == list(np.argsort(-act.kl))


@pytest.mark.parametrize("call, message", [
    (lambda m: traverse(m, [4], [0.0, 1.0]), "out of range"),
    (lambda m: traverse(m, [1, 1], [0.0, 1.0]), "distinct"),
    (lambda m: traverse(m, [], [0.0]), "at least one"),
    (lambda m: manifold(m, n=4), "choose the plane"),
    (lambda m: manifold(m, n=4, plane=(0, 1, 2)), "two latent dimensions"),
    (lambda m: manifold(m, n=1, plane=(0, 1)), "n >= 2"),
    (lambda m: interpolate(torch.zeros(4), torch.ones(4), 5, "cubic"), "unknown interpolation"),
    (lambda m: interpolate(torch.zeros(4), torch.ones(3), 5), "one size"),
    (lambda m: attribute_vector(np.zeros((5, 4)), np.ones(5, bool)), "some examples and not"),
    (lambda m: attribute_vector(np.zeros((5, 4)), np.ones(4, bool)), "one boolean per code"),
    (lambda m: apply_attribute(m, torch.rand(2, 1, 8, 8), torch.ones(3)), "4 finite numbers"),
])
def test_bad_arguments_are_rejected(call, message):
    with pytest.raises((ConfigError, DataError), match=message):
        call(recording_vae())


# ---- conditional VAE ----------------------------------------------------------------------
def test_cvae_uses_its_label_and_checks_it():
    cfg = zspace.CVAEConfig(input_shape=(1, 8, 8), latent_dim=3, hidden=(16,), num_classes=4)
    m = zspace.CVAE(cfg)
    z = torch.randn(5, 3)
    a, b = m.decode_mean(z, torch.zeros(5, dtype=torch.long)), m.decode_mean(z, torch.full((5,), 3))
    assert not torch.allclose(a, b)                                 # the label reaches the decoder
    x = torch.rand(5, 1, 8, 8)
    assert not torch.allclose(m.embed(x, torch.zeros(5, dtype=torch.long)), m.embed(x, torch.ones(5, dtype=torch.long)))
    assert m.sample(6, y=2).shape == (6, 1, 8, 8)
    with pytest.raises(ConfigError, match="give the labels"):
        m.sample(2)
    with pytest.raises(DataError, match=r"lie in \[0, 4\)"):
        m.loss(x, torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(ConfigError, match="num_classes"):
        zspace.CVAEConfig(num_classes=1)
    conv = zspace.CVAE(zspace.CVAEConfig(input_shape=(1, 8, 8), latent_dim=2, architecture="conv",
                                         channels=(4,), num_classes=3))
    assert torch.isfinite(conv.loss(x[:3], torch.tensor([0, 1, 2])).loss)


def test_cvae_bound_and_training_need_labels(digits):
    from zspace.evaluation import importance_sampled_log_likelihood

    run = zspace.train("cvae", digits, config=tiny_config(epochs=1), progress=False, latent_dim=3, hidden=(16,))
    b = next(iter(run.loader("test", 50).epoch(0)))
    torch.manual_seed(0)
    with torch.no_grad():
        rec, kl = run.model.elbo_terms(b.x, b.y)
    ll = importance_sampled_log_likelihood(run.model, b.x, 200, y=b.y)
    assert float(ll.mean()) >= float((rec - kl).mean()) - 1.0
    unlabelled = zspace.DataSplits(zspace.ArrayData(digits.train.x), zspace.ArrayData(digits.test.x), "nolabels")
    with pytest.raises(DataError, match="needs labelled data"):
        zspace.train("cvae", unlabelled, config=tiny_config(epochs=1), progress=False, latent_dim=2, hidden=(8,))
    with pytest.raises(DataError, match="has 5 classes"):
        zspace.train("cvae", digits, config=tiny_config(epochs=1), progress=False, latent_dim=2, hidden=(8,),
                     num_classes=5)


# ---- CLI and report --------------------------------------------------------------------
def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("cvae") / "run"
    code = main(["train", "cvae", "--data", "digits", "--latent-dim", "4", "--hidden", "32", "--epochs", "2",
                 "--batch-size", "64", "--eval-limit", "100", "--no-progress", "--out", str(path)])
    assert code == 0
    return path


def test_explore_commands_write_their_figures(cvae_run, digits, tmp_path, capsys):
    np.save(tmp_path / "mask.npy", np.arange(len(digits.test)) % 3 == 0)
    for argv in (["traverse", "--dims", "0,2", "--steps", "5"], ["traverse", "--example", "3", "--num-dims", "2"], ["manifold", "--plane", "1,3", "-n", "6"],
                 ["interpolate", "--pairs", "2"], ["scatter"], ["classes", "--per-class", "3"],
                 ["attribute", "--positive", "3", "--negative", "8"], ["attribute", "--mask", tmp_path / "mask.npy"]):
        out = tmp_path / f"{argv[0]}-{len(argv)}.png"
        code, text, err = cli(capsys, "explore", argv[0], cvae_run, "--out", out, *argv[1:])
        assert code == 0, err
        assert out.stat().st_size > 5000 and f"{argv[0]}: {out}" in text
    code, text, _ = cli(capsys, "explore", "activity", cvae_run)
    assert code == 0 and "of 4 dimensions active" in text and text.count(" KL ") == 4
    code, text, _ = cli(capsys, "sample", cvae_run, "--label", 7, "-n", 4, "--out", tmp_path / "sevens.png")
    assert code == 0


@pytest.mark.parametrize("argv, message", [
    (["manifold"], "choose a plane"),
    (["traverse", "--dims", "0,9"], "out of range"),
    (["traverse", "--label", "12"], "out of range"),
    (["traverse", "--example", "100000"], "example 100000 out of range"),
    (["attribute"], "either as a class"),
    (["attribute", "--positive", "42"], "no example has label 42"),
    (["interpolate", "--pairs", "0"], "--pairs must be >= 1"),
])
def test_explore_user_errors(cvae_run, tmp_path, capsys, argv, message):
    code, _, err = cli(capsys, "explore", argv[0], cvae_run, "--out", tmp_path / "x.png", *argv[1:])
    assert code == 2 and message in err and err.count("\n") == 1


def test_sample_label_is_checked(cvae_run, tmp_path, capsys):
    code, _, err = cli(capsys, "sample", cvae_run, "--out", tmp_path / "s.png")
    assert code == 2 and "--label" in err


def test_report_opens_in_chromium_with_every_image(cvae_run, tmp_path, capsys):
    code, text, _ = cli(capsys, "report", cvae_run, "--out", tmp_path / "report.html")
    assert code == 0
    page = (tmp_path / "report.html").read_text()
    for section in ("Metrics", "Training curves", "Reconstructions", "Samples per class", "Traversals", "Manifold",
                    "Interpolations", "Latent scatter", "Active units and KL per dimension", "Configuration"):
        assert f">{section}</h2>" in page and f'<a href="#{slug(section)}">{section}</a>' in page   # in the TOC
    assert "not drawn" not in page
    assert "http://" not in page and "https://" not in page           # nothing fetched from the network
    if chromium_binary() is None:
        pytest.skip(SKIP_REASON)
    result = open_in_chromium(tmp_path / "report.html")
    assert result["errors"] == []
    assert len(result["images"]) >= 7            # one PNG per figure section (the curves are inline SVG)
    assert all(img["naturalWidth"] > 0 and img["naturalHeight"] > 0 for img in result["images"])


def test_slerp_refuses_opposite_codes():
    z = torch.tensor([1.0, 2.0, -0.5])
    with pytest.raises(ConfigError, match="opposite codes"):
        interpolate(z, -z, 5, "slerp")
    assert torch.allclose(interpolate(z, -z, 3, "linear")[1], torch.zeros(3))
