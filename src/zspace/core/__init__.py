"""The bottom layer: plumbing every other layer may use (atomic IO, config base, version).

Nothing here imports anything of zspace's except ``errors``.
"""
from .config import ModelConfig, check_positive, check_positive_int
from .io import read_json, write_folder_atomic, write_json_atomic, write_text_atomic
from .version import __version__

__all__ = ["ModelConfig", "check_positive", "check_positive_int", "read_json", "write_folder_atomic",
           "write_json_atomic", "write_text_atomic", "__version__"]
