"""The library's own exception types.

Everything a user can get wrong (a file, an array, a config, a CLI flag, a checkpoint)
raises one of these with a message saying what was wrong and what to do. The CLI
prints the message on one line and exits with status 2.
"""


class ZspaceError(Exception):
    """Base class for every error a user can cause."""


class DataError(ZspaceError, ValueError):
    """Input data is missing, malformed or out of range."""


class ConfigError(ZspaceError, ValueError):
    """A configuration value or argument is invalid."""


class CheckpointError(ZspaceError):
    """A run folder or checkpoint is missing, incomplete or inconsistent."""


class TrainingDiverged(ZspaceError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
