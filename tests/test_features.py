"""Feature extractors, sampling cost and latent smoothness."""
import numpy as np
import pytest
import torch
from torch import nn

import zspace
from zspace import ConfigError, DataError
from zspace.evaluation.features import NETS, SHIPPED, CIFARNet, LeNet, as_unit_images, load_extractor
from zspace.evaluation.sample_quality import frechet_distance, latent_smoothness, sampling_cost


@pytest.mark.parametrize("data", SHIPPED)
def test_shipped_extractors_load_and_are_deterministic(data):
    ext = load_extractor(data)
    cls, _, shape = NETS[data]
    assert ext.name == f"{cls.__name__}-{data}" and ext.input_shape == shape
    images = np.random.default_rng(0).integers(0, 256, size=(20, *shape), dtype=np.uint8)
    f1, f2 = ext.features(images), ext.features(images / 255.0)
    assert f1.shape == (20, cls.feature_dim) and np.allclose(f1, f2, atol=1e-5)
    assert np.array_equal(f1, ext.features(images))
    p = ext.probs(images)
    assert p.shape == (20, 10) and np.allclose(p.sum(1), 1)


def test_fid_cifarnet_is_a_trained_cifar10_classifier_and_refuses_grey_images():
    """The shipped weights say what they reached on the test set (written by their training command)."""
    from safetensors import safe_open

    from zspace.evaluation.features import WEIGHTS_DIR

    with safe_open(str(WEIGHTS_DIR / "cifarnet-cifar10.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["data"] == "cifar10" and float(meta["test_accuracy"]) > 0.7
    ext = load_extractor("cifar10")
    with pytest.raises(DataError, match="32x32"):
        ext.features(np.zeros((2, 28, 28), np.uint8))
    out = CIFARNet()(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_own_module_as_extractor_and_checks():
    ext = load_extractor(nn.Sequential(nn.Flatten(), nn.Linear(784, 5)), name="mine")
    assert ext.features(np.zeros((3, 28, 28), np.uint8)).shape == (3, 5)
    with pytest.raises(ConfigError, match="no classifier head"):
        ext.probs(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError, match="28x28"):
        as_unit_images(np.zeros((3, 8, 8)))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        as_unit_images(np.full((1, 28, 28), 3.0))
    with pytest.raises(ConfigError, match="no shipped extractor"):
        load_extractor("celeba")
    bad = load_extractor(nn.Identity(), name="identity")
    with pytest.raises(ConfigError, match=r"must return \(N, d\)"):
        bad.features(np.zeros((2, 28, 28), np.uint8))


def test_sampling_cost_and_smoothness():
    m = zspace.VAE(zspace.VAEConfig(input_shape=(1, 28, 28), latent_dim=4, hidden=(32,)))
    cost = sampling_cost(m, num_samples=200, batch_size=64)
    assert cost.samples_per_second > 0 and cost.seconds_per_sample == pytest.approx(1 / cost.samples_per_second)
    x = torch.rand(6, 1, 28, 28)
    flat = lambda imgs: imgs.reshape(len(imgs), -1).numpy()  # noqa: E731
    s = latent_smoothness(m, x[:3], x[3:], flat, steps=8)
    assert s.num_paths == 3 and 1.0 <= s.mean_ratio <= s.worst_ratio
    # a "decoder" that jumps halfway is caught
    class Jumpy(zspace.VAE):
        def decode_mean(self, z, y=None):
            t = torch.linspace(0, 1, len(z))[:, None, None, None]
            return (t > 0.5).float().expand(len(z), 1, 28, 28)
    j = Jumpy(m.config)
    assert latent_smoothness(j, x[:2], x[2:4], flat, steps=8).worst_ratio == pytest.approx(7.0)
    with pytest.raises(DataError, match="same positive number"):
        latent_smoothness(m, x[:2], x[:3], flat)


def test_fid_lenet_sees_the_difference_between_digits_and_noise():
    ext = load_extractor("mnist")
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    blank = np.zeros((300, 28, 28), np.uint8)
    blank[:, 10:18, 12:16] = 255                       # a crude "1"
    noise2 = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    near = frechet_distance(ext.features(noise), ext.features(noise2))
    far = frechet_distance(ext.features(noise), ext.features(blank))
    assert near < 0.1 * far
