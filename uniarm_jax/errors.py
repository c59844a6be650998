"""The project's exception types: each names what was wrong and what was expected."""


class ConfigError(ValueError):
    """A model or run configuration that this project cannot honour."""


class CheckpointError(ValueError):
    """A checkpoint whose tensors do not match the model they are loaded into."""


class DataError(ValueError):
    """A preference data file (or a row of it) that does not match its schema."""


class TrainingError(RuntimeError):
    """Training stopped on a bad value (a NaN/inf loss); the last good checkpoint is kept."""
