"""A run: one folder holding the full config, checkpoints, metrics and figures.

``train`` starts one, ``resume`` continues one, ``load_run`` opens one for use. The
config written to ``RUN/config.json`` names the model (and every option), the data
(source and preprocessing) and the training settings, so a run can be rebuilt and
every number traced back to what made it.
"""
from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..data.dataset import ArrayData, DataSplits
from ..data.loader import BatchLoader
from ..data.sources import load_dataset
from ..data.transforms import Preprocessing
from ..errors import CheckpointError, ConfigError
from ..models.base import Model, ModelConfig, build_model
from .checkpoint import CONFIG_FILE, latest_checkpoint, load_weights, read_json, write_json_atomic
from .config import TrainConfig
from .trainer import EVAL_SEED, Trainer


@dataclass(frozen=True)
class DataSpec(ModelConfig):
    source: str = "fashion-mnist"     # a named data set or a file path
    preprocessing: str = "scale"
    static_seed: int = 0              # the fixed draw of static binarization
    test_fraction: float = 0.1        # held out when a file has no test split
    split_seed: int = 0
    label_column: str | None = None   # CSV column holding labels

    def load(self) -> DataSplits:
        return load_dataset(self.source, test_fraction=self.test_fraction, seed=self.split_seed,
                            label_column=self.label_column)

    def preprocess(self) -> Preprocessing:
        return Preprocessing(self.preprocessing, self.static_seed)


def default_preprocessing(model_name: str, model_options: dict, data: ArrayData) -> str:
    if not data.is_8bit:
        return "none" if float(np.min(data.x)) < 0 or float(np.max(data.x)) > 1 else "scale"
    if model_name == "vae" and model_options.get("likelihood", "bernoulli") == "bernoulli":
        return "dynamic-binarize"
    return "scale"


class Run:
    """An opened run folder: its config, its model (latest weights) and its data."""

    def __init__(self, path: Path | None, config: dict, model: Model, data: DataSplits | None = None,
                 history: list[dict] | None = None):
        self.path = Path(path) if path is not None else None
        self.config, self.model = config, model
        self._data, self._history = data, history

    @property
    def data_spec(self) -> DataSpec:
        return DataSpec.from_dict(self.config["data"])

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config["train"])

    @property
    def preprocessing(self) -> Preprocessing:
        return self.data_spec.preprocess()

    def data(self) -> DataSplits:
        if self._data is None:
            if self.data_spec.source.startswith("<in-memory"):
                raise CheckpointError(f"this run was trained on in-memory data ({self.data_spec.source}); "
                                      f"pass the data explicitly (--data)")
            self._data = self.data_spec.load()
        return self._data

    def loader(self, split: str = "test", batch_size: int = 500, limit: int | None = None,
               data: DataSplits | None = None) -> BatchLoader:
        """Unshuffled batches of a split with the run's preprocessing (fixed evaluation draw)."""
        part = (data or self.data()).split(split)
        if limit is not None:
            part = part.head(limit)
        return BatchLoader(part, batch_size, self.preprocessing, shuffle=False, seed=EVAL_SEED)

    def describe(self) -> str:
        return f"{self.model.describe()} on {self.data_spec.source} ({self.data_spec.preprocessing})"

    def history(self) -> list[dict]:
        """One row per epoch (or partial epoch at a stop): loss terms, lr, wall time."""
        if self._history is None:
            self._history = read_json(latest_checkpoint(self.path) / "state.json")["history"]
        return self._history


def _full_config(model: Model, data: DataSpec, train: TrainConfig) -> dict[str, Any]:
    return {"zspace_version": __version__,
            "model": {"name": model.name, "config": model.config.to_dict(),
                      "custom_networks": bool(getattr(model, "custom_networks", False))},
            "data": data.to_dict(), "train": train.to_dict(),
            "environment": {"torch": torch.__version__, "python": platform.python_version(),
                            "threads": torch.get_num_threads()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def train(model: str | Model, data: str | DataSplits = "fashion-mnist", *, out: str | Path | None = None,
          preprocessing: str | None = None, config: TrainConfig | None = None,
          progress: bool = True, figures: bool = True, overwrite: bool = False,
          on_epoch_end=None, test_fraction: float = 0.1, label_column: str | None = None,
          **model_options) -> Run:
    """Trains a model and returns the opened run.

    ``model`` is a registered name ('vae', 'ae') with ``model_options`` for its config,
    or a built Model. ``data`` is a named set, a file path or DataSplits; a file without
    its own test split has ``test_fraction`` held out; ``label_column`` names a CSV's labels.
    """
    config = config or TrainConfig()
    splits = load_dataset(data, test_fraction=test_fraction, label_column=label_column)
    source = splits.source or f"<in-memory {splits.name}>"
    torch.manual_seed(config.seed)  # fixes the initial weights too
    if isinstance(model, str):
        opts = {"input_shape": splits.example_shape, **model_options}
        built = build_model(model, opts)
        name = model
    else:
        if model_options:
            raise ConfigError("model options are only for a model given by name")
        built, name = model, model.name
    pre = preprocessing or default_preprocessing(name, model_options, splits.train)
    spec = DataSpec(source=str(source), preprocessing=pre, test_fraction=test_fraction,
                    label_column=label_column)
    run_dir = Path(out) if out is not None else None
    if run_dir is not None:
        if (run_dir / CONFIG_FILE).exists() and not overwrite:
            raise ConfigError(f"{run_dir} already holds a run; resume it with --resume, "
                              f"or choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / CONFIG_FILE, _full_config(built, spec, config))
    trainer = Trainer(built, splits.train, splits.test, spec.preprocess(), config, run_dir,
                      progress=progress, on_epoch_end=on_epoch_end)
    state = trainer.fit()
    run = Run(run_dir, _full_config(built, spec, config), built, splits, state.history)
    if figures and run_dir is not None:
        from ..report.figures import write_run_figures
        write_run_figures(run)
    return run


def resume(run_dir: str | Path, *, epochs: int | None = None, steps: int | None = None,
           data: DataSplits | None = None, progress: bool = True, figures: bool = True,
           on_epoch_end=None) -> Run:
    """Continues a run from its latest checkpoint, exactly as if it had never stopped.

    ``epochs``/``steps`` extend the run (the learning-rate schedule then follows the new
    total, so the result differs from a run planned that long from the start).
    """
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / CONFIG_FILE)
    train_cfg = TrainConfig.from_dict(cfg["train"])
    if epochs is not None or steps is not None:
        train_cfg = dataclasses.replace(train_cfg, epochs=epochs if epochs is not None else train_cfg.epochs,
                                        steps=steps)
        cfg["train"] = train_cfg.to_dict()
        write_json_atomic(run_dir / CONFIG_FILE, cfg)
    model = _model_from_config(cfg)
    spec = DataSpec.from_dict(cfg["data"])
    if data is None:
        if spec.source.startswith("<in-memory"):
            raise CheckpointError(f"{run_dir} was trained on in-memory data; pass data= to resume it")
        data = spec.load()
    trainer = Trainer(model, data.train, data.test, spec.preprocess(), train_cfg, run_dir,
                      progress=progress, on_epoch_end=on_epoch_end)
    trainer.resume()
    state = trainer.fit()
    run = Run(run_dir, cfg, model, data, state.history)
    if figures:
        from ..report.figures import write_run_figures
        write_run_figures(run)
    return run


def _model_from_config(cfg: dict) -> Model:
    if cfg.get("model", {}).get("custom_networks"):
        raise CheckpointError("this run used injected encoder/decoder networks, which config.json "
                              "cannot rebuild; build the model in Python and load the weights with "
                              "zspace.training.checkpoint.load_weights")
    try:
        return build_model(cfg["model"]["name"], cfg["model"]["config"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"config.json has no usable model section ({e})") from None


def load_run(run_dir: str | Path, map_location: str = "cpu") -> Run:
    """Opens a run folder with its latest weights (safetensors: no code is executed)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{run_dir}: not a zspace run (no {CONFIG_FILE})")
    cfg = read_json(run_dir / CONFIG_FILE)
    model = _model_from_config(cfg)
    load_weights(model, latest_checkpoint(run_dir) / "model.safetensors")
    model.to(map_location).eval()
    return Run(run_dir, cfg, model)
