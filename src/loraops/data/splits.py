"""The prepared splits as stages read them: ``data/prepared/{train,val,test}.jsonl`` and ``labels.json``."""

from __future__ import annotations

from loraops.core import Layout, read_json, read_jsonl, require

SPLIT_NAMES = ("train", "val", "test")


def load_splits(layout: Layout) -> dict[str, list[dict]]:
    require(*(layout.prepared_dir / f"{name}.jsonl" for name in SPLIT_NAMES))
    return {name: read_jsonl(layout.prepared_dir / f"{name}.jsonl") for name in SPLIT_NAMES}


def load_labels(layout: Layout) -> list[str]:
    path = layout.prepared_dir / "labels.json"
    require(path)
    return read_json(path)
