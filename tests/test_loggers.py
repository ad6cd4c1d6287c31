"""Logging back-ends: metrics.csv always, TensorBoard / MLflow / W&B chosen by log_to, each
through its own library (stand-ins here: none of them is a dependency), a missing one refused
in one line before anything is written."""
import csv
import importlib.machinery
import sys
import types

import pytest

from zspace.cli import main
from zspace.errors import ConfigError
from zspace.training import loggers, train

from .conftest import tiny_config

OPTS = dict(latent_dim=3, hidden=(16,))


def fake_module(monkeypatch, name, **attrs):
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


def missing(monkeypatch, *names):
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)   # find_spec -> None, import -> ImportError


class FakeMlflowClient:
    instances = []

    def __init__(self, tracking_uri):
        self.uri, self.params, self.metrics, self.terminated = tracking_uri, {}, [], False
        FakeMlflowClient.instances.append(self)

    def get_experiment_by_name(self, name):
        return None

    def create_experiment(self, name):
        return "7"

    def create_run(self, exp_id, run_name):
        self.exp_id, self.run_name = exp_id, run_name
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id="r1"))

    def log_param(self, run_id, k, v):
        self.params[k] = v

    def set_tag(self, run_id, k, v):
        pass

    def log_metric(self, run_id, k, v, step):
        self.metrics.append((k, v, step))

    def set_terminated(self, run_id):
        self.terminated = True


class FakeWandbRun:
    def __init__(self, **kw):
        self.init, self.logged, self.finished = kw, [], False

    def log(self, metrics, step):
        self.logged.append((metrics, step))

    def finish(self):
        self.finished = True


def test_log_to_values_are_parsed_and_checked():
    assert loggers.parse_log_to("auto") == ("auto",)
    assert loggers.parse_log_to("none") == ("csv",)
    assert loggers.parse_log_to("MLflow, wandb,mlflow") == ("csv", "mlflow", "wandb")
    for bad, message in (("", "empty"), ("auto,mlflow", "stand alone"), ("neptune", "unknown back-end 'neptune'")):
        with pytest.raises(ConfigError, match=message):
            loggers.parse_log_to(bad)
    with pytest.raises(ConfigError, match="unknown back-end"):
        tiny_config(log_to="comet")


def test_auto_takes_tensorboard_only_when_installed(monkeypatch):
    missing(monkeypatch, "tensorboard")
    assert loggers.resolve("auto") == ("csv",)
    fake_module(monkeypatch, "tensorboard")
    assert loggers.resolve("auto") == ("csv", "tensorboard")


def test_a_named_missing_library_is_one_clear_error(monkeypatch, digits, tmp_path):
    missing(monkeypatch, "mlflow")
    with pytest.raises(ConfigError, match=r"the mlflow package is not installed \(pip install mlflow\)"):
        loggers.resolve("csv,mlflow")
    out = tmp_path / "r"
    with pytest.raises(ConfigError, match="mlflow"):
        train("vae", digits, out=out, config=tiny_config(epochs=1, log_to="mlflow"), progress=False, **OPTS)
    assert not out.exists()     # refused before the run folder was made


def test_cli_missing_backend_exits_2_with_one_line(monkeypatch, capsys, tmp_path):
    missing(monkeypatch, "wandb")
    code = main(["train", "vae", "--data", "digits", "--latent-dim", "3", "--hidden", "16", "--epochs", "1",
                 "--no-progress", "--log-to", "wandb", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "wandb package is not installed" in err


def test_csv_and_the_chosen_backends_get_every_row(monkeypatch, digits, tmp_path):
    missing(monkeypatch, "tensorboard")
    FakeMlflowClient.instances.clear()
    fake_module(monkeypatch, "mlflow")
    fake_module(monkeypatch, "mlflow.tracking", MlflowClient=FakeMlflowClient)
    runs = []
    fake_module(monkeypatch, "wandb", init=lambda **kw: runs.append(FakeWandbRun(**kw)) or runs[-1])
    out = tmp_path / "r"
    run = train("vae", digits, out=out, config=tiny_config(epochs=2, log_to="mlflow,wandb"), progress=False,
                figures=False, **OPTS)
    history = run.history()

    with open(out / "metrics.csv") as f:        # csv: always, one row per epoch, the history's numbers
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [h["step"] for h in history]
    assert [float(r["test_elbo"]) for r in rows] == pytest.approx([h["test_elbo"] for h in history])

    [client] = FakeMlflowClient.instances
    assert client.uri == (out.resolve() / "mlruns").as_uri() and client.run_name == "r" and client.terminated
    assert client.params["train.log_to"] == "mlflow,wandb" and client.params["model.name"] == "vae"
    logged = {(k, step): v for k, v, step in client.metrics}
    for h in history:
        assert logged[("test_elbo", h["step"])] == pytest.approx(h["test_elbo"])
        assert logged[("train_kl", h["step"])] == pytest.approx(h["train_kl"])
    assert not any(k in ("epoch", "step") for k, _, _ in client.metrics)

    [wb] = runs
    assert wb.init["mode"] == "offline" and wb.init["dir"] == str(out) and wb.finished
    assert [step for _, step in wb.logged] == [h["step"] for h in history]
    assert wb.logged[-1][0]["test_elbo"] == pytest.approx(history[-1]["test_elbo"])


def test_no_run_folder_no_backends(monkeypatch):
    fake_module(monkeypatch, "wandb", init=lambda **kw: pytest.fail("wandb.init without a run folder"))
    assert loggers.make_loggers("wandb", None, {}) == []


def test_a_backend_that_fails_to_start_is_one_line(monkeypatch, tmp_path):
    class Refusing:
        def __init__(self, tracking_uri):
            raise RuntimeError("the filesystem tracking backend is in maintenance mode\nsecond line")

    fake_module(monkeypatch, "mlflow")
    fake_module(monkeypatch, "mlflow.tracking", MlflowClient=Refusing)
    with pytest.raises(ConfigError) as e:
        loggers.make_loggers("mlflow", tmp_path, {})
    assert str(e.value) == "--log-to mlflow: RuntimeError: the filesystem tracking backend is in maintenance mode"
