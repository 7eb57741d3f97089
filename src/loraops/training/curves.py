"""Loss curves as DVC plot CSVs (``plots/train_loss.csv``, ``plots/val_loss.csv``), written and read back."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from loraops.core import atomic_write_text


def write_curve(path: Path, rows: list[dict], value: str) -> None:
    """A DVC plot CSV with columns ``step,<value>``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["step", value])
    writer.writeheader()
    writer.writerows({"step": r["step"], value: r[value]} for r in rows)
    atomic_write_text(path, buffer.getvalue())


def read_curve(path: Path, value: str) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as handle:
        return [{"step": int(r["step"]), value: float(r[value])} for r in csv.DictReader(handle)]
