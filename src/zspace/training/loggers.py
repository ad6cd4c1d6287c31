"""Where the training rows go besides RUN/metrics.csv: TensorBoard, MLflow, W&B.

``metrics.csv`` is always written (with each checkpoint, from the run's history). The other
back-ends are chosen by ``TrainConfig.log_to`` (``--log-to``), a comma-separated list:

    auto          TensorBoard when the ``tensorboard`` package is installed, else nothing more
    none          metrics.csv only
    tensorboard   RUN/tensorboard/ (torch.utils.tensorboard's SummaryWriter)
    mlflow        an MLflow file store in RUN/mlruns/ (experiment "zspace", one MLflow run per
                  zspace run or resume); browse with ``mlflow ui --backend-store-uri RUN/mlruns``
                  (MLflow 3 wants MLFLOW_ALLOW_FILE_STORE=true for that; zspace sets it unless set)
    wandb         Weights & Biases in offline mode, in RUN/wandb/ (``wandb sync`` uploads it later)

Each back-end is used through its own library, imported only when chosen: none is a
dependency of zspace. A back-end named explicitly whose library is missing is an error (one
line, raised before training starts); ``auto`` never is.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
from pathlib import Path

from ..core.config import flatten
from ..errors import ConfigError

BACKENDS = ("csv", "tensorboard", "mlflow", "wandb")
_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def parse_log_to(spec: str) -> tuple[str, ...]:
    """The back-ends a ``log_to`` value names (csv, always on, included), checked; 'auto' stays
    'auto' until ``resolve``."""
    if not isinstance(spec, str):
        raise ConfigError(f"log_to must be a comma-separated string, got {spec!r}")
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError("log_to is empty; use auto, none, or some of " + ", ".join(BACKENDS))
    if len(names) > 1 and ("auto" in names or "none" in names):
        raise ConfigError(f"log_to {spec!r}: 'auto' and 'none' stand alone")
    bad = [n for n in names if n not in (*BACKENDS, "auto", "none")]
    if bad:
        raise ConfigError(f"log_to: unknown back-end {bad[0]!r}; choose from auto, none, " + ", ".join(BACKENDS))
    if names == ["none"]:
        return ("csv",)
    if names == ["auto"]:
        return ("auto",)
    return tuple(dict.fromkeys(["csv", *names]))


def installed(backend: str) -> bool:
    """Whether a back-end's library can be imported here (csv: always)."""
    package = _PACKAGES.get(backend)
    return package is None or importlib.util.find_spec(package) is not None


def resolve(spec: str) -> tuple[str, ...]:
    """The back-ends a run will use: 'auto' becomes csv (+ tensorboard when installed); a named
    back-end whose library is missing raises ConfigError."""
    names = parse_log_to(spec)
    if names == ("auto",):
        return ("csv", "tensorboard") if installed("tensorboard") else ("csv",)
    missing = [n for n in names if not installed(n)]
    if missing:
        raise ConfigError(f"--log-to {missing[0]}: the {_PACKAGES[missing[0]]} package is not installed "
                          f"(pip install {_PACKAGES[missing[0]]}), or leave it out of --log-to")
    return names


def _numbers(row: dict) -> dict[str, float]:
    """The finite numeric entries of a training row, without its epoch/step coordinates."""
    return {k: float(v) for k, v in row.items()
            if k not in ("epoch", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


class MetricLogger:
    """One back-end: ``log(row)`` gets every training row (epoch, step, loss terms, lr, test
    terms), ``close()`` is called once when training ends."""

    name = "base"

    def log(self, row: dict) -> None: ...

    def close(self) -> None: ...


class TensorBoardLogger(MetricLogger):
    name = "tensorboard"

    def __init__(self, run_dir: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict) -> None:
        for k, v in _numbers(row).items():
            self.writer.add_scalar(k, v, row["step"])

    def close(self) -> None:
        self.writer.close()


class MLflowLogger(MetricLogger):
    """A local file store (RUN/mlruns): nothing leaves the machine."""

    name = "mlflow"

    def __init__(self, run_dir: Path, config: dict):
        # MLflow 3 keeps its file store but refuses it unless asked for (a database is its new
        # default); a user's own setting of the variable wins
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        tracking = importlib.import_module("mlflow.tracking")
        self.client = tracking.MlflowClient(tracking_uri=(Path(run_dir).resolve() / "mlruns").as_uri())
        exp = self.client.get_experiment_by_name("zspace")
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment("zspace")
        self.run_id = self.client.create_run(exp_id, run_name=Path(run_dir).name).info.run_id
        for k, v in flatten(config).items():
            self.client.log_param(self.run_id, k, str(v)[:500])     # MLflow caps a parameter's length
        self.client.set_tag(self.run_id, "zspace.run_dir", str(Path(run_dir).resolve()))

    def log(self, row: dict) -> None:
        for k, v in _numbers(row).items():
            self.client.log_metric(self.run_id, k, v, step=int(row["step"]))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbLogger(MetricLogger):
    """Offline mode only: the run is written under RUN/wandb/ and never uploaded by zspace."""

    name = "wandb"

    def __init__(self, run_dir: Path, config: dict):
        wandb = importlib.import_module("wandb")
        self.run = wandb.init(project="zspace", name=Path(run_dir).name, dir=str(run_dir), mode="offline",
                              config=config)

    def log(self, row: dict) -> None:
        self.run.log({**_numbers(row), "epoch": row["epoch"]}, step=int(row["step"]))

    def close(self) -> None:
        self.run.finish()


LOGGERS = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger, "wandb": WandbLogger}


def make_loggers(spec: str, run_dir: Path | None, config: dict) -> list[MetricLogger]:
    """The back-ends ``spec`` names for a run folder (none without one; csv is the trainer's)."""
    names = resolve(spec)
    if run_dir is None:
        return []
    made = []
    for name in names:
        if name == "csv":
            continue
        try:
            made.append(LOGGERS[name](Path(run_dir), config))
        except Exception as e:   # the library's own failure (a store it refuses, a bad setting): one line
            for logger in made:
                logger.close()
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"--log-to {name}: {type(e).__name__}: {first}") from None
    return made
