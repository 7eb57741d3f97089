"""The lowest layer: where a project's files live, atomic writes, hashing, errors and the MLflow connection.

Nothing here knows about params or stages; every other package builds on it.
"""

from loraops.core.errors import (ConfigError, DataError, LoraopsError, ModelError, RegistryError, StageOrderError,
                                 ValidationFailed)
from loraops.core.io import atomic_dir, atomic_write_text, read_json, read_jsonl, write_json, write_jsonl
from loraops.core.layout import Layout, require

__all__ = ["ConfigError", "DataError", "Layout", "LoraopsError", "ModelError", "RegistryError", "StageOrderError",
           "ValidationFailed", "atomic_dir", "atomic_write_text", "read_json", "read_jsonl", "require", "write_json",
           "write_jsonl"]
