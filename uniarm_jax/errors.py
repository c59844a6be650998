"""Every error type of the project. Each names what was wrong and what was expected.

They all derive from `UniarmError`: the `uniarm` command prints exactly these as one line and exits
with status 2 (3 for a stopped training run); anything else is a bug and keeps its traceback. Each
also derives from the builtin it refines (ValueError, FileNotFoundError, RuntimeError), so callers
that catch those keep working.
"""


class UniarmError(Exception):
    """Bad input to the project: a file, a field or a value it cannot honour."""


class ConfigError(UniarmError, ValueError):
    """A model, adapter, run or command configuration that this project cannot honour."""


class CheckpointError(UniarmError, ValueError):
    """A checkpoint (weights or adapter) that is unreadable or does not match its model."""


class DataError(UniarmError, ValueError):
    """A preference or prompt file (or a row of it) that does not match its schema."""


class ScoringError(UniarmError, ValueError):
    """A scorer that returned something other than one finite score per response."""


class MissingFileError(UniarmError, FileNotFoundError):
    """A file or directory named in the input that does not exist."""


class TrainingError(UniarmError, RuntimeError):
    """Training stopped on a bad value (a NaN/inf loss); the last good checkpoint is kept."""


class RequestError(UniarmError, ValueError):
    """A request to `uniarm serve` that it cannot honour; `param` names the field (OpenAI's error JSON)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param
