"""A run: one folder holding the full config, checkpoints, metrics and figures.

``train`` starts one, ``resume`` continues one, ``load_run`` opens one for use. The
config written to ``RUN/config.json`` names the model (and every option), the data
(source and preprocessing) and the training settings, so a run can be rebuilt and
every number traced back to what made it.
"""
from __future__ import annotations

import dataclasses
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.compute import resolve_device, resolve_threads
from ..core.version import __version__
from ..data.dataset import DataSplits
from ..data.loader import BatchLoader
from ..data.sources import load_dataset
from ..data.transforms import Preprocessing
from ..errors import CheckpointError, ConfigError
from ..models.base import Model, ModelConfig, build_model
from ..models.capabilities import SamplesFromPrior
from ..models.vqprior import VQPrior
from .checkpoint import (CONFIG_FILE, clean_stale_temporaries, latest_checkpoint, load_weights, read_json,
                         read_state, write_json_atomic)
from .config import TrainConfig
from .loggers import resolve as resolve_loggers
from .distributed import init_from_env
from .trainer import EVAL_SEED, Trainer


@dataclass(frozen=True)
class DataSpec(ModelConfig):
    source: str = "fashion-mnist"     # a named data set or a file path
    preprocessing: str = "scale"
    static_seed: int = 0              # the fixed draw of static binarization
    test_fraction: float = 0.1        # held out when a file has no test split
    split_seed: int = 0
    label_column: str | None = None   # CSV column holding labels
    image_size: int | None = None     # images decoded from files: resized to this side
    image_channels: int | None = None  # images: 1 grey or 3 RGB (None: as stored)
    skip_bad: bool = False            # images: leave out files that do not decode

    def load(self) -> DataSplits:
        return load_dataset(self.source, test_fraction=self.test_fraction, seed=self.split_seed,
                            label_column=self.label_column, image_size=self.image_size,
                            channels=self.image_channels, skip_bad=self.skip_bad)

    def preprocess(self) -> Preprocessing:
        return Preprocessing(self.preprocessing, self.static_seed)


# Figures are drawn by the report layer, above this one: the package (zspace/__init__.py)
# installs ``report.figures.write_run_figures`` here, so ``train(figures=True)`` draws them
# without training importing the report.
FIGURE_WRITER: Callable[["Run"], object] | None = None


def draw_run_figures(run: "Run") -> None:
    """Reconstructions, samples and loss curves into RUN/figures/ (by the installed writer)."""
    if FIGURE_WRITER is None:
        raise ConfigError("no figure writer is installed (import zspace, or pass figures=False)")
    FIGURE_WRITER(run)


class Run:
    """An opened run folder: its config, its model (latest weights) and its data."""

    def __init__(self, path: Path | None, config: dict, model: Model, data: DataSplits | None = None,
                 history: list[dict] | None = None, position: dict | None = None):
        self.path = Path(path) if path is not None else None
        self.config, self.model = config, model
        self._data, self._history, self._position = data, history, position

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
               data: DataSplits | None = None, preprocessing: Preprocessing | None = None) -> BatchLoader:
        """Unshuffled batches of a split with the run's preprocessing (fixed evaluation draw), or
        ``preprocessing`` (e.g. the grey levels of a binarized run's inputs, to show them).

        ``data`` (default: the run's own) must have the examples the model was built for.
        """
        part = (data or self.data()).split(split)
        shape = tuple(self.model.config.input_shape)
        if part.example_shape != shape:
            colour = (len(shape) == 3 and len(part.example_shape) == 3 and part.example_shape[1:] == shape[1:])
            hint = f" ({part.example_shape[0]} channels into a {shape[0]}-channel model)" if colour else ""
            raise ConfigError(f"data examples have shape {part.example_shape}, the model expects {shape}{hint}")
        self.model.check_data(part)
        if limit is not None:
            part = part.head(limit)
        return BatchLoader(part, batch_size, preprocessing or self.preprocessing, shuffle=False, seed=EVAL_SEED)

    def describe(self) -> str:
        if self.config.get("prior_of"):
            return f"{self.model.describe()}, prior over the codes of {Path(self.config['prior_of']).name}"
        return f"{self.model.describe()} on {self.data_spec.source} ({self.data_spec.preprocessing})"

    def sample(self, n: int, y=None) -> torch.Tensor:
        """n samples in input space (a VQPrior decodes its code grids itself)."""
        if not isinstance(self.model, SamplesFromPrior):
            raise ConfigError(f"{self.describe()} has no prior to sample from")
        x = self.model.sample(n, y=y)
        if self.config.get("prior_of") and not isinstance(self.model, VQPrior):
            # a prior run written before VQPrior: a bare PixelCNN over codes, decoded by the
            # VQ-VAE in the folder its config names (loaded once)
            if getattr(self, "_decoder", None) is None:
                self._decoder = load_run(self.config["prior_of"],
                                         map_location=str(next(self.model.parameters()).device)).model
            x = self._decoder.decode_codes(x[:, 0])
        return x

    def position(self) -> dict:
        """Where the model's weights are in training: {"epoch": completed epochs, "batch": batches
        into the next one, "step": optimiser steps, "checkpoint": its folder name or None}."""
        if self._position is None:
            if self.path is not None:
                self._position = checkpoint_position(latest_checkpoint(self.path))
            else:
                last = (self._history or [{}])[-1]
                self._position = {"epoch": last.get("epoch", 0), "batch": 0, "step": last.get("step", 0),
                                  "checkpoint": None}
        return self._position

    def history(self) -> list[dict]:
        """One row per epoch (or partial epoch at a stop): loss terms, lr, wall time."""
        if self._history is None:
            self._history = read_state(latest_checkpoint(self.path))["history"]
        return self._history


def checkpoint_position(checkpoint: Path, state: dict | None = None) -> dict:
    """A checkpoint's epoch, batch and step (see ``Run.position``)."""
    state = read_state(checkpoint) if state is None else state
    return {"epoch": state["epoch"], "batch": state.get("batch", 0), "step": state["step"],
            "checkpoint": Path(checkpoint).name}


def _full_config(model: Model, data: DataSpec, train: TrainConfig) -> dict[str, Any]:
    return {"zspace_version": __version__,
            "model": {"name": model.name, "config": model.config.to_dict(),
                      "custom_networks": bool(model.custom_networks)},
            "data": data.to_dict(), "train": train.to_dict(),
            "environment": {"torch": torch.__version__, "python": platform.python_version(),
                            "threads": resolve_threads(train.threads)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def train(model: str | Model, data: str | DataSplits = "fashion-mnist", *, out: str | Path | None = None,
          preprocessing: str | None = None, config: TrainConfig | None = None,
          progress: bool = True, figures: bool = True, overwrite: bool = False,
          on_epoch_end=None, test_fraction: float = 0.1, label_column: str | None = None,
          callbacks=(), image_size: int | None = None, image_channels: int | None = None,
          skip_bad: bool = False, **model_options) -> Run:
    """Trains a model and returns the opened run.

    ``model`` is a registered name ('vae', 'ae') with ``model_options`` for its config,
    or a built Model. ``data`` is a named set, a file path or DataSplits; a file without
    its own test split has ``test_fraction`` held out; ``label_column`` names a CSV's labels;
    ``image_size``, ``image_channels`` (1 or 3) and ``skip_bad`` apply to images decoded from
    files. Under torchrun every rank calls this; rank 0 alone writes the run folder.
    """
    config = config or TrainConfig()
    resolve_loggers(config.log_to)   # a missing logging library is refused before anything is written
    splits = load_dataset(data, test_fraction=test_fraction, label_column=label_column,
                          image_size=image_size, channels=image_channels, skip_bad=skip_bad)
    source = splits.source or f"<in-memory {splits.name}>"
    torch.manual_seed(config.seed)  # fixes the initial weights too
    if isinstance(model, str):
        opts = {"input_shape": splits.example_shape, **model_options}
        built = build_model(model, opts, copies=4)
        name = model
    else:
        if model_options:
            raise ConfigError("model options are only for a model given by name")
        built, name = model, model.name
    built.check_data(splits.train)
    built.check_data(splits.test)
    pre = preprocessing or built.default_preprocessing(splits.train)   # the model's own policies
    built.check_preprocessing(pre)
    spec = DataSpec(source=str(source), preprocessing=pre, test_fraction=test_fraction,
                    label_column=label_column, image_size=image_size, image_channels=image_channels,
                    skip_bad=skip_bad)
    run_dir = Path(out) if out is not None else None
    dist = init_from_env(config.torch_device())
    if run_dir is not None:
        _prepare_run_dir(run_dir, overwrite, write=dist.is_main)
        if dist.is_main:
            write_json_atomic(run_dir / CONFIG_FILE, _full_config(built, spec, config))
    trainer = Trainer(built, splits.train, splits.test, spec.preprocess(), config, run_dir,
                      progress=progress, on_epoch_end=on_epoch_end, callbacks=callbacks, dist=dist)
    state = trainer.fit()
    run = Run(run_dir, _full_config(built, spec, config), built, splits, state.history)
    if figures and run_dir is not None and dist.is_main:
        draw_run_figures(run)
    return run


RUN_OUTPUTS = ("checkpoints", "metrics.csv", "figures", "tensorboard", "mlruns", "wandb", "summary.md", CONFIG_FILE)
LOGGER_FOLDERS = ("tensorboard", "mlruns", "wandb")   # written by the training.loggers back-ends


def _prepare_run_dir(run_dir: Path, overwrite: bool, write: bool = True) -> None:
    """Refuses to mix two runs in one folder; with ``overwrite`` the old run's outputs go first.

    A folder whose run never reached its first checkpoint holds nothing to keep. With
    ``write`` false (ranks other than 0) it only checks.
    """
    has_run = (run_dir / "checkpoints" / "latest").exists()
    if has_run and not overwrite:
        raise ConfigError(f"{run_dir} already holds a run; resume it with --resume, "
                          f"or choose another --out (or --overwrite)")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a folder")
    # checked by the writing rank alone: the others may already see what rank 0 wrote there
    if write and not has_run and not overwrite and run_dir.is_dir() and any(run_dir.iterdir()) \
            and not _is_unfinished_run(run_dir):
        raise ConfigError(f"{run_dir} holds files and is not a zspace run; choose an empty or new --out "
                          f"(--overwrite replaces zspace's outputs there: {', '.join(RUN_OUTPUTS)})")
    if not write:
        return
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for old in run_dir.glob("eval-*.json"):
        old.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


def _is_unfinished_run(run_dir: Path) -> bool:
    """A folder that holds only a run which never reached its first checkpoint: zspace's own
    outputs and a config.json that zspace wrote."""
    if not all(p.name in RUN_OUTPUTS or p.name.startswith(".") for p in run_dir.iterdir()):
        return False
    try:
        cfg = read_json(run_dir / CONFIG_FILE)
    except CheckpointError:
        return False
    return isinstance(cfg, dict) and "zspace_version" in cfg and all(k in cfg for k in ("model", "data", "train"))


def check_output_path(path: str | Path) -> None:
    """Refuses an output that would overwrite a run's, a detector's or a shard store's own files:
    RUN/config.json, metrics.csv, summary.md, anything in checkpoints/ or a logger's folder, anything
    inside a detector folder or a shard store, and a device, FIFO or socket already at ``path``."""
    from ..data.shards import is_store

    target = Path(path).resolve()
    if target.exists() and not (target.is_file() or target.is_dir()):
        raise ConfigError(f"{path} is a device, FIFO or socket, not a file zspace may write")
    for parent in (target, *target.parents):
        if (parent / CONFIG_FILE).is_file() and (parent / "checkpoints").is_dir():
            if parent == target:
                raise ConfigError(f"{path} is a run folder; give a file name for the output")
            rel = target.relative_to(parent)
            if rel.parts[0] in ("checkpoints", *LOGGER_FOLDERS, CONFIG_FILE, "metrics.csv", "summary.md"):
                raise ConfigError(f"{path} is one of the run {parent}'s own files; write elsewhere")
            return
        if (parent / "detector.json").is_file():
            raise ConfigError(f"{path} is inside the detector folder {parent}; write elsewhere")
        if is_store(parent):
            raise ConfigError(f"{path} is inside the shard store {parent}; write elsewhere")


def resume(run_dir: str | Path, *, epochs: int | None = None, steps: int | None = None,
           data: DataSplits | None = None, progress: bool = True, figures: bool = True,
           on_epoch_end=None, callbacks=(), threads: int | None = None, workers: int | None = None) -> Run:
    """Continues a run from its latest checkpoint, exactly as if it had never stopped.

    ``epochs``/``steps`` extend the run (the learning-rate schedule then follows the new
    total, so the result differs from a run planned that long from the start). ``threads`` and
    ``workers`` change how it computes, not what: the same batches, but bit-exact equality
    with an uninterrupted run needs the thread count it had.
    """
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    train_cfg = TrainConfig.from_dict(cfg["train"])
    if threads is not None or workers is not None:
        train_cfg = dataclasses.replace(train_cfg, threads=threads if threads is not None else train_cfg.threads,
                                        workers=workers if workers is not None else train_cfg.workers)
    if epochs is not None or steps is not None:
        train_cfg = dataclasses.replace(train_cfg, epochs=epochs if epochs is not None else train_cfg.epochs,
                                        steps=steps)
        cfg["train"] = train_cfg.to_dict()
    dist = init_from_env(train_cfg.torch_device())
    read_state(latest_checkpoint(run_dir))   # a run that cannot resume is refused before anything is written
    model = _model_from_config(cfg, copies=4)
    spec = DataSpec.from_dict(cfg["data"])
    if data is None:
        if spec.source.startswith("<in-memory"):
            raise CheckpointError(f"{run_dir} was trained on in-memory data; pass data= to resume it")
        data = spec.load()
    trainer = Trainer(model, data.train, data.test, spec.preprocess(), train_cfg, run_dir,
                      progress=progress, on_epoch_end=on_epoch_end, callbacks=callbacks, dist=dist)
    trainer.resume()   # checks the whole checkpoint: the config is rewritten only after it loaded
    if dist.is_main:
        clean_stale_temporaries(run_dir)   # a killed run's unfinished checkpoint and temporaries
    if dist.is_main and (epochs is not None or steps is not None):
        write_json_atomic(run_dir / CONFIG_FILE, cfg)
    state = trainer.fit()
    run = Run(run_dir, cfg, model, data, state.history)
    if figures and dist.is_main:
        draw_run_figures(run)
    return run


def read_run_config(run_dir: Path) -> dict:
    """RUN/config.json, checked to hold the model, data and train sections."""
    cfg = read_json(Path(run_dir) / CONFIG_FILE)
    if not isinstance(cfg, dict) or not all(isinstance(cfg.get(k), dict) for k in ("model", "data", "train")):
        raise CheckpointError(f"{Path(run_dir) / CONFIG_FILE}: not a zspace run config "
                              f"(needs model, data and train sections)")
    try:
        for cls, section in ((TrainConfig, "train"), (DataSpec, "data")):
            _check_field_types(cls, cfg[section], section)
            cls.from_dict(cfg[section])
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{Path(run_dir) / CONFIG_FILE}: {e}") from None
    return cfg


def _check_field_types(cls, values: dict, section: str) -> None:
    """Each value has its field's default's type (an int where a float is meant is fine; a
    field whose default is None takes anything from_dict accepts)."""
    for f in dataclasses.fields(cls):
        if f.name not in values or f.default is dataclasses.MISSING or f.default is None or values[f.name] is None:
            continue
        v, want = values[f.name], type(f.default)
        ok = isinstance(v, want) and not (isinstance(v, bool) and want is not bool)
        if (want is float and isinstance(v, int) and not isinstance(v, bool)) or (want is tuple and isinstance(v, list)):
            ok = True
        if not ok:
            raise ConfigError(f"{section}.{f.name} must be {want.__name__}, got {v!r}")


def _model_from_config(cfg: dict, copies: int = 2) -> Model:
    if cfg.get("model", {}).get("custom_networks"):
        raise CheckpointError("this run used injected encoder/decoder networks, which config.json "
                              "cannot rebuild; build the model in Python and load the weights with "
                              "zspace.training.checkpoint.load_weights")
    try:
        return build_model(cfg["model"]["name"], cfg["model"]["config"], copies=copies)
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"config.json has no usable model section ({e})") from None


def load_run(run_dir: str | Path, map_location: str = "cpu") -> Run:
    """Opens a run folder with its latest weights (safetensors: no code is executed)."""
    run_dir = Path(run_dir)
    device = resolve_device(map_location)   # no GPU for "cuda": one line, before anything loads
    if not (run_dir / CONFIG_FILE).is_file():
        raise CheckpointError(f"{run_dir}: not a zspace run (no {CONFIG_FILE})")
    cfg = read_run_config(run_dir)
    model = _model_from_config(cfg)
    checkpoint = latest_checkpoint(run_dir)
    load_weights(model, checkpoint / "model.safetensors")
    state = read_state(checkpoint)
    model.to(device).eval()
    return Run(run_dir, cfg, model, history=state["history"], position=checkpoint_position(checkpoint, state))
