"""Errors that loraops reports to the user as one line, without a traceback."""


class LoraopsError(Exception):
    """A problem with the user's input or environment, stated so that it can be fixed."""


class ConfigError(LoraopsError):
    """params.yaml (or a command-line override) is invalid."""


class DataError(LoraopsError):
    """The dataset cannot be read or does not have the expected shape."""


class ModelError(LoraopsError):
    """The base model or an adapter cannot be resolved or loaded."""


class StageOrderError(LoraopsError):
    """A stage ran before the outputs it needs exist."""


class ValidationFailed(LoraopsError):
    """The dataset failed validation; the message is the one-screen summary."""


class RegistryError(LoraopsError):
    """The model registry could not be reached or changed as asked; the message says what was left."""
