"""The base of every frozen config dataclass (models, data specs, training) and its checks."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..errors import ConfigError


class ModelConfig:
    """Mixin for frozen dataclass configs: JSON round trip with unknown keys rejected."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def resolve(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Hook for configs with presets: fills defaults before construction."""
        return options

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        d = cls.resolve(dict(d))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(fields)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown option(s) {', '.join(sorted(unknown))}")
        # JSON turns tuples into lists; configs keep tuples so they stay hashable and frozen.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def check_positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_positive(name: str, value) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config as one level of dotted keys: {"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
