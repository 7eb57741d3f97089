"""The ``ingest`` stage: read a dataset source into the canonical raw form.

Raw form: one JSON object per line, ``{"text": str, "label": str, "split": "train"|"val"|"test"|None}``.
Readers only map and parse; they report where a file is broken (line numbers) but the data checks
proper belong to the ``validate`` stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from loraops.config import DataParams, Params
from loraops.core import DataError, Layout, write_jsonl
from loraops.data.demo import generate_demo_dataset

SPLITS = ("train", "val", "test")


def _scalar(value: Any, column: str, where: str) -> Any:
    """A cell as a plain JSON scalar (numpy scalars unwrapped); a list, dict, array or other object is a
    one-line error naming the row and column (validation checks values, not shapes)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy / pyarrow scalars from Parquet
        return _scalar(value.item(), column, where)
    shape = f" of {len(value)} item(s)" if hasattr(value, "__len__") else ""
    raise DataError(f"{where}: column {column!r} holds a {type(value).__name__}{shape}, not a single value; "
                    "each cell must be one string")


def _record(text: Any, label: Any, split: Any, where: str,
            columns: tuple[str, str, str] = ("text", "label", "split")) -> dict[str, Any]:
    text, label, split = (_scalar(v, c, where) for v, c in zip((text, label, split), columns))
    if split is not None and split not in SPLITS:
        raise DataError(f"{where}: split {split!r} is not one of {SPLITS}")
    return {"text": text, "label": label, "split": split}


def _map_rows(rows: Iterable[tuple[str, dict[str, Any]]], params: DataParams, source: Path) -> list[dict]:
    wanted = [params.text_column, params.label_column] + ([params.split_column] if params.split_column else [])
    out = []
    for where, row in rows:
        missing = [c for c in wanted if c not in row]
        if missing:
            raise DataError(f"{where}: missing column(s) {missing} (have {sorted(row)}); "
                            "set data.text_column / data.label_column / data.split_column")
        split = row[params.split_column] if params.split_column else None
        out.append(_record(row[params.text_column], row[params.label_column], split, where,
                           (params.text_column, params.label_column, params.split_column or "split")))
    if not out:
        raise DataError(f"{source}: no data rows")
    return out


def read_jsonl_source(path: Path, params: DataParams) -> list[dict]:
    def rows() -> Iterable[tuple[str, dict[str, Any]]]:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                where = f"{path}:{number}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{where}: invalid UTF-8 ({exc.reason} at byte {exc.start})") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: malformed JSON line ({exc.msg} at column {exc.colno})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
                yield where, row

    return _map_rows(rows(), params, path)


def read_table_source(path: Path, params: DataParams) -> list[dict]:
    import pandas as pd

    try:
        if params.source == "csv":
            # Strings stay strings: an empty text must reach validation as '', not NaN.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: invalid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot parse {params.source} ({str(exc).strip()[:300]})") from None
    # Row numbers as a user sees them in the file (CSV: header is line 1).
    offset = 2 if params.source == "csv" else 0
    records = frame.to_dict(orient="records")
    return _map_rows(((f"{path}:{i + offset}", r) for i, r in enumerate(records)), params, path)


def read_clinc150_source(path: Path, params: DataParams) -> list[dict]:
    """CLINC150 ``data_full.json`` (keys train/val/test of ``[utterance, intent]``); out-of-scope items are left out."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a CLINC150 JSON file ({exc})") from None
    if not isinstance(payload, dict) or not all(isinstance(payload.get(s), list) for s in SPLITS):
        raise DataError(f"{path}: expected CLINC150 keys {SPLITS} holding [utterance, intent] pairs")
    keep: set[str] | None = None
    if params.clinc150_domains:
        domains_file = path.parent / "domains.json"
        if not domains_file.is_file():
            raise DataError(f"{domains_file}: needed for data.clinc150_domains but not found")
        domains = json.loads(domains_file.read_text(encoding="utf-8"))
        unknown = sorted(set(params.clinc150_domains) - set(domains))
        if unknown:
            raise DataError(f"data.clinc150_domains: unknown domain(s) {unknown}; known: {sorted(domains)}")
        keep = {intent for d in params.clinc150_domains for intent in domains[d]}
    out = []
    for split in SPLITS:
        for index, item in enumerate(payload[split]):
            if not (isinstance(item, list) and len(item) == 2):
                raise DataError(f"{path}: {split}[{index}] is not an [utterance, intent] pair")
            text, label = item
            if keep is None or label in keep:
                out.append(_record(text, label, split, f"{path}:{split}[{index}]"))
    return out


def source_file(params: DataParams, root: Path) -> Path:
    """The file a non-demo source reads; an error names the param when it is missing."""
    path = root / Path(params.path).expanduser()
    if not path.is_file():
        raise DataError(f"data.path {params.path!r}: file not found ({path})")
    return path


def ingest(params: DataParams, root: Path, seed: int) -> list[dict]:
    """Read ``params``' source into raw records (demo data is generated from ``seed``)."""
    if params.source == "demo":
        rows = generate_demo_dataset(seed=seed, train_per_intent=params.demo.train_per_intent,
                                     test_per_intent=params.demo.test_per_intent)
        return [_record(r["text"], r["label"], r["split"], "demo") for r in rows]
    path = source_file(params, root)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    if params.source == "jsonl":
        return read_jsonl_source(path, params)
    if params.source == "clinc150":
        return read_clinc150_source(path, params)
    return read_table_source(path, params)


def ingest_stage(params: Params, layout: Layout) -> dict:
    """The ``ingest`` stage: ``data/raw/dataset.jsonl`` in the canonical raw form."""
    records = ingest(params.data, layout.root, params.project.seed)
    write_jsonl(layout.raw_data, records)
    return {"rows": len(records), "path": str(layout.raw_data.relative_to(layout.root))}
