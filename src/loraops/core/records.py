"""Typed records: what one stage hands the next, written and read through the same pydantic model.

A record is a JSON file in the project layout (``metrics/train.json``, ``models/search/chosen.json``,
``metrics/eval.json``, ``metrics/validation.json``). The stage that produces it owns its model; every reader
parses it with that model, so a field renamed on one side fails loudly on the other instead of reading
``None`` through a ``.get()`` chain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from loraops.core.errors import StageOrderError
from loraops.core.io import write_json

R = TypeVar("R", bound="Record")


class Record(BaseModel):
    """Base of every stage record: unknown fields are errors, so writer and reader cannot drift apart."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @classmethod
    def read(cls: type[R], path: Path) -> R:
        if not path.is_file():
            raise StageOrderError(f"{path}: missing input; run the stage that produces it first")
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, ValidationError) as exc:
            first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
            where = ".".join(str(p) for p in first["loc"]) or "file"
            raise StageOrderError(f"{path}: not a valid {cls.__name__} ({where}: {first['msg']}); "
                                  "run the stage that writes it again") from None

    def write(self, path: Path) -> None:
        write_json(path, self.to_json())

    def to_json(self) -> dict:
        """The JSON form, as written: a field that is None is left out (reading it back gives None again)."""
        return self.model_dump(mode="json", exclude_none=True)
