"""Errors a user can act on. Every message names the problem and the fix."""


class FlowprobeError(Exception):
    """Base class of all errors flowprobe raises on purpose."""


class ConfigError(FlowprobeError):
    """A config value is unknown, of the wrong type or out of range."""


class ModelSpecError(FlowprobeError):
    """A model spec string cannot be parsed or names no known model."""


class DataError(FlowprobeError):
    """A dataset is missing, corrupt or not in the expected layout."""


class TrainingError(FlowprobeError):
    """Training cannot go on (e.g. the loss became NaN/inf)."""


class ActivationFileError(FlowprobeError):
    """An activations.h5 file is missing, incomplete or violates the data contract."""


class AnalysisError(FlowprobeError):
    """An analysis produced an impossible value (NaN, |CKA| > 1, ...)."""
