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


@pytest.fixture
def bf16_anywhere(monkeypatch):
    """bf16 autocast on this CPU even where it is emulated (no AVX512-BF16/AMX): slower there,
    but the same arithmetic, so the bf16 code paths are checked on every machine. The trainer
    itself refuses emulated bf16 (test_bf16_unsupported_is_one_line)."""
    from zspace.training import trainer
    if not trainer.bf16_supported(torch.device("cpu")):
        monkeypatch.setattr(trainer, "bf16_supported", lambda device: True)


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


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory):
    """Two small digit VAEs for the report tests: "a" evaluated at epoch 2 and then trained to
    epoch 3 (so its evaluation is stale), "b" with a wider code; (path_a, path_b)."""
    from zspace.tasks import evaluate_run, write_evaluation

    root = tmp_path_factory.mktemp("report-runs")
    a = zspace.train("vae", "digits", out=root / "a", config=tiny_config(epochs=2), progress=False,
                     figures=False, latent_dim=4, hidden=(32,))
    write_evaluation(evaluate_run(a, nll_samples=5, limit=60), None, a.path)
    zspace.resume(root / "a", epochs=3, progress=False, figures=False)
    zspace.train("vae", "digits", out=root / "b", config=tiny_config(epochs=2), progress=False, figures=False,
                 latent_dim=6, hidden=(32,))
    return root / "a", root / "b"


@pytest.fixture(scope="session")
def report_page(report_runs, tmp_path_factory):
    """Run "a"'s report (written once: drawing its figures is the slow part)."""
    from zspace.report import write_report

    return write_report(zspace.load_run(report_runs[0]), tmp_path_factory.mktemp("report") / "report.html")
