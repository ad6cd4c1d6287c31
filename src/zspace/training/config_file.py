"""`zspace train MODEL --config FILE`: a run's options from a file with the schema of a run's
own config.json (JSON; YAML too where PyYAML is installed):

    {"model": {"name": "vae", "config": {"latent_dim": 16, ...}},
     "data":  {"source": "mnist", "preprocessing": "dynamic-binarize", ...},
     "train": {"epochs": 20, "lr": 0.001, ...}}

Every section and key is optional; unknown keys are refused with their name. A finished
run's config.json given back reproduces the run (its input shape comes from the data, its
version and environment are only a record). Flags given on the command line override the file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..core.io import read_json, regular_file_size
from ..errors import ConfigError
from .config import TrainConfig

# data keys and the train() keyword each becomes
DATA_KEYS = {"source": "data", "preprocessing": "preprocessing", "test_fraction": "test_fraction",
             "label_column": "label_column", "image_size": "image_size", "image_channels": "image_channels",
             "skip_bad": "skip_bad"}
RECORD_ONLY = ("zspace_version", "environment", "created")   # written with a run, ignored on input
FIXED_DATA = {"static_seed": 0, "split_seed": 0}             # train() uses these values


@dataclass
class RunOptions:
    """What a config file asks for: the model's name and options, train()'s data keywords, and
    the TrainConfig's fields."""
    model: str | None = None
    model_options: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or give JSON") from None
        if regular_file_size(path, ConfigError) > 1 << 20:
            raise ConfigError(f"{path}: too large for a run config")
        try:
            return yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid YAML ({_first_line(e)})") from None
    return read_json(path, ConfigError)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def load_run_options(path: str | Path) -> RunOptions:
    """The file's options, checked: sections are objects, keys known, the train section a valid
    TrainConfig (data and model options are checked when the run is built)."""
    path = Path(path)
    cfg = read_config_file(path)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a run config is an object with model, data and train sections")
    unknown = set(cfg) - {"model", "data", "train", "prior_of", *RECORD_ONLY}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; "
                          f"expected model, data, train")
    if cfg.get("prior_of"):
        raise ConfigError(f"{path} is a VQ-VAE prior's config; train priors with `zspace train prior`")
    for name in ("model", "data", "train"):
        if not isinstance(cfg.get(name, {}), dict):
            raise ConfigError(f"{path}: the {name} section must be an object")
    out = RunOptions()
    model = cfg.get("model", {})
    bad = set(model) - {"name", "config", "custom_networks"}
    if bad:
        raise ConfigError(f"{path}: unknown key(s) in model: {', '.join(sorted(bad))}")
    if model.get("custom_networks"):
        raise ConfigError(f"{path}: the run used injected networks, which a config file cannot rebuild")
    out.model = model.get("name")
    options = model.get("config", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{path}: model.config must be an object")
    out.model_options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()
                         if k != "input_shape"}   # the data decide the input shape
    data = cfg.get("data", {})
    for key, fixed in FIXED_DATA.items():
        if data.get(key, fixed) != fixed:
            raise ConfigError(f"{path}: data.{key} = {data[key]!r} cannot be set from the command line "
                              f"(only {fixed}); use zspace.train in Python")
    bad = set(data) - set(DATA_KEYS) - set(FIXED_DATA)
    if bad:
        raise ConfigError(f"{path}: unknown key(s) in data: {', '.join(sorted(bad))}")
    out.data = {DATA_KEYS[k]: v for k, v in data.items() if k in DATA_KEYS}
    train = cfg.get("train", {})
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = set(train) - names
    if bad:
        raise ConfigError(f"{path}: unknown key(s) in train: {', '.join(sorted(bad))}")
    try:
        TrainConfig.from_dict(train)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: train: {e}") from None
    out.train = dict(train)
    return out
