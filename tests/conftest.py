import numpy as np
import pytest
import torch

import zspace


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    """No test sees the user's data folders or cache, or the network (file:// URLs only)."""
    import urllib.request

    real_urlopen = urllib.request.urlopen

    def offline(url, *args, **kwargs):
        if not str(getattr(url, "full_url", url)).startswith("file:"):
            raise urllib.error.URLError("tests run offline")
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("ZSPACE_DATA", raising=False)
    monkeypatch.setattr("zspace.data.sources.SYSTEM_DATA_DIR", cache / "system")
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits():
    return zspace.load_dataset("digits")


@pytest.fixture
def tiny_vae_opts():
    return dict(latent_dim=4, hidden=(32,))


def tiny_config(**kw):
    base = dict(epochs=2, batch_size=64, lr=3e-3, eval_limit=100)
    base.update(kw)
    return zspace.TrainConfig(**base)


def rng_images(n, shape=(1, 8, 8), seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
