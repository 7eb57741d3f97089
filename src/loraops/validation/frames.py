"""The tables Great Expectations validates, built from raw records, and the profile (``stats``) of a version.

Checks that GX cannot express directly are computed here as columns (normalised text, the splits a text
leaks into, per-label counts and shares) so that GX asserts them and they show in the Data Docs.

* ``rows``: one row per record, with a 1-based ``row`` (the order of the raw dataset) and derived columns.
* ``labels``: one row per label: rows, training count, imbalance against the largest label.
* ``shift``: one row per label of this or the previous version: share now, share then, TVD term.
* ``tokens``: the rows' token counts (``text_tokens``, also a column of ``rows``), a table of its own so that
  counting can go on while the other tables are checked.
"""

from __future__ import annotations

import math
import re
import unicodedata
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from loraops.data import normalise_answer

SPLITS = ("train", "val", "test")
UNSPLIT = "(none)"  # split key of rows that carry no split (prepare splits them later)
_PUNCTUATION = re.compile(r"[^\w\s]|_")
# The ASCII characters _PUNCTUATION removes, as bytes to delete: NFKC leaves ASCII as it is and casefold is
# lower() there, so an ASCII text takes this bytes path (several times faster) with exactly the same result.
_ASCII_PUNCTUATION = bytes(c for c in range(128) if _PUNCTUATION.match(chr(c)))


def normalise_text(text: str) -> str:
    """The form duplicates and leakage are compared in: NFKC, case-folded, punctuation removed, spaces collapsed."""
    if text.isascii():
        return " ".join(text.encode("ascii").lower().translate(None, _ASCII_PUNCTUATION).decode("ascii").split())
    return " ".join(_PUNCTUATION.sub("", unicodedata.normalize("NFKC", text).casefold()).split())


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _usable(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _usable_mask(values: pd.Series) -> pd.Series:
    """``_usable`` of every value, worked out once per distinct value (labels repeat across millions of rows)."""
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    except TypeError:  # unhashable values (a list as a label): one at a time
        return values.map(_usable).astype(bool)
    usable = np.array([_usable(u) for u in uniques] + [False], dtype=bool)  # code -1 (missing) -> False
    return pd.Series(usable[codes], index=values.index)


@dataclass
class Frames:
    rows: pd.DataFrame
    labels: pd.DataFrame
    shift: pd.DataFrame | None
    splits: pd.DataFrame  # one row per split the source gives: split, first_row, rows
    columns: list[str]  # the columns the records carry
    has_tokens: bool
    # Gives the text_tokens column (waiting for a count still running); None once it is in ``rows``.
    pending_tokens: Callable[[], pd.Series] | None = None

    def tokens(self) -> pd.DataFrame:
        """The table the token check validates (``text_tokens``), the column also put into ``rows``."""
        if self.pending_tokens is not None:
            self.rows.insert(self.rows.columns.get_loc("text_chars") + 1, "text_tokens", self.pending_tokens())
            self.pending_tokens = None
        return self.rows[["text_tokens"]]


def _objects(values: list) -> pd.Series:
    return pd.Series(values, dtype=object)


def _leaks(rows: pd.DataFrame, key: str) -> pd.Series:
    """For rows whose ``key`` also occurs in another split: the splits it occurs in ('train/test'); else None."""
    out = _objects([None] * len(rows))
    mask = rows["split"].isin(SPLITS) & rows[key].notna()
    sub = rows.loc[mask, [key, "split"]]
    if sub.empty:
        return out
    spread = sub.groupby(key, sort=False)["split"].transform("nunique")
    leaked = sub[spread > 1]
    if leaked.empty:
        return out
    names = leaked.groupby(key, sort=False)["split"].agg(lambda s: "/".join(x for x in SPLITS if x in set(s)))
    out.iloc[leaked.index.to_numpy()] = leaked[key].map(names).to_numpy()
    return out


def build_rows(records: list[dict], token_lengths: Callable[[list[str]], list[int]] | None,
               background: Executor | None = None) -> tuple[pd.DataFrame, list[str], Callable[[], pd.Series] | None]:
    """The rows table, the columns the records carry, and (with ``token_lengths``) what gives the
    ``text_tokens`` column: counted in ``background`` while the rest is built and validated, when given."""
    records = [r if isinstance(r, dict) else {} for r in records]
    columns = sorted({key for record in records for key in record})
    rows = pd.DataFrame({"row": np.arange(1, len(records) + 1, dtype=np.int64)})
    for name in ("text", "label"):
        if name in columns:
            rows[name] = _objects([r.get(name) for r in records])
    rows["split"] = _objects([None if _missing(r.get("split")) else r.get("split") for r in records])
    rows["split_key"] = _objects([UNSPLIT if s is None else str(s) for s in rows["split"]])
    tokens = None
    if "text" in rows:
        texts = rows["text"].tolist()
        usable = [_usable(t) for t in texts]
        rows["text_chars"] = pd.Series([len(t) if isinstance(t, str) else np.nan for t in texts], dtype=float)
        if token_lengths is not None:
            tokens = _token_column(texts, token_lengths, background)
        _derived_text_columns(rows, texts, usable)
    return rows, columns, tokens


def _token_column(texts: list, token_lengths: Callable[[list[str]], list[int]],
                  background: Executor | None) -> Callable[[], pd.Series]:
    """What gives the token count of every string text (NaN for the others). In ``background`` the counting
    (the tokenizer's native code, which releases the GIL) runs beside the Python that builds and checks the
    other columns: on two cores the two overlap instead of adding up."""
    strings = [t for t in texts if isinstance(t, str)]

    def column(counts: list[int]) -> pd.Series:
        found = iter(counts)
        return pd.Series([float(next(found)) if isinstance(t, str) else np.nan for t in texts], dtype=float)

    if background is None or not strings:
        series = column(token_lengths(strings) if strings else [])
        return lambda: series
    pending = background.submit(token_lengths, strings)
    return lambda: column(pending.result())


def _derived_text_columns(rows: pd.DataFrame, texts: list, usable: list[bool]) -> None:
    """The exact and normalised forms of each usable text, label-in-text and leakage (added to ``rows``)."""
    rows["text_exact"] = _objects([t if ok else None for t, ok in zip(texts, usable)])
    # A text with no letters or digits (emoji only) normalises to nothing: it is compared exactly only,
    # so such texts are not all "duplicates" of each other.
    rows["text_normalised"] = _objects([(normalise_text(t) or None) if ok else None for t, ok in zip(texts, usable)])
    if "label" in rows:
        forms = _LabelForms()
        rows["label_in_text"] = _objects([forms.found_in(t, label) if ok else None
                                          for t, ok, label in zip(texts, usable, rows["label"])])
    rows["leak_exact"] = _leaks(rows, "text_exact")
    rows["leak_normalised"] = _leaks(rows, "text_normalised")


class _LabelForms:
    """Whether a text contains its label verbatim (case-folded; ``_``/``-`` also as spaces); labels shorter than
    3 characters are too common as words to count. A label's forms are worked out once, not once per row."""

    def __init__(self) -> None:
        self._forms: dict[Any, tuple[str, ...]] = {}

    def forms(self, label: Any) -> tuple[str, ...]:
        try:
            return self._forms[label]
        except KeyError:
            pass
        except TypeError:  # an unhashable label (a list): not a usable label
            return ()
        found: tuple[str, ...] = ()
        if _usable(label) and len(label.strip()) >= 3:
            name = label.strip().casefold()
            found = tuple({name, name.replace("_", " "), name.replace("-", " ")})
        self._forms[label] = found
        return found

    def found_in(self, text: str, label: Any) -> str | None:
        """The label when the (usable) text contains one of its forms, else None."""
        forms = self.forms(label)
        if not forms:
            return None
        folded = text.casefold()
        return label if any(form in folded for form in forms) else None


def _in_pool(split: Any) -> bool:
    """The training pool: rows of split 'train' and rows without a split (most of those go to train)."""
    return split is None or split == "train"


def build_labels(rows: pd.DataFrame) -> pd.DataFrame:
    empty = pd.DataFrame({"label": _objects([]), "first_row": pd.Series([], dtype=np.int64),
                          "rows": pd.Series([], dtype=np.int64), "train_count": pd.Series([], dtype=np.int64),
                          "imbalance": pd.Series([], dtype=float), "collides_with": _objects([])})
    if "label" not in rows:
        return empty
    valid = rows[_usable_mask(rows["label"])]
    if valid.empty:
        return empty
    grouped = valid.groupby("label", sort=False)
    first_row, total = grouped["row"].min(), grouped.size()
    pool = valid[valid["split"].map(_in_pool)]
    train = pool.groupby("label", sort=False).size().reindex(first_row.index, fill_value=0)
    largest = float(train.max())
    imbalance = [largest / c if c else np.nan for c in train]
    names = list(first_row.index)
    # Labels the evaluator cannot tell apart: they normalise alike (case, spaces, hyphens, punctuation).
    forms: dict[str, list[str]] = {}
    for name in names:
        forms.setdefault(normalise_answer(name), []).append(name)
    collides = [", ".join(repr(o) for o in forms[normalise_answer(n)] if o != n) or None for n in names]
    return pd.DataFrame({"label": _objects(names), "first_row": first_row.to_numpy(np.int64),
                         "rows": total.reindex(first_row.index).to_numpy(np.int64),
                         "train_count": train.to_numpy(np.int64), "imbalance": np.asarray(imbalance, dtype=float),
                         "collides_with": _objects(collides)})


def build_shift(labels: pd.DataFrame, previous: dict | None) -> pd.DataFrame | None:
    before = (previous or {}).get("labels") or {}
    if not before:
        return None
    now = dict(zip(labels["label"], labels["rows"].astype(int)))
    names = list(now) + [name for name in before if name not in now]
    total_now, total_before = sum(now.values()) or 1, sum(before.values()) or 1
    share = np.array([now.get(n, 0) / total_now for n in names])
    share_before = np.array([before.get(n, 0) / total_before for n in names])
    return pd.DataFrame({"label": _objects(names), "share": share, "previous_share": share_before,
                         "tvd_term": np.abs(share - share_before) / 2})


def build_splits(rows: pd.DataFrame) -> pd.DataFrame:
    given = rows[rows["split"].isin(SPLITS)] if "split" in rows else rows.iloc[0:0]
    grouped = given.groupby("split", sort=False)["row"]
    return pd.DataFrame({"split": _objects(list(grouped.groups)), "first_row": grouped.min().to_numpy(np.int64),
                         "rows": grouped.size().to_numpy(np.int64)})


def build_frames(records: list[dict], token_lengths: Callable[[list[str]], list[int]] | None,
                 previous: dict | None, background: Executor | None = None) -> Frames:
    """The tables; with ``background`` the token counts may still be coming (:meth:`Frames.tokens` waits)."""
    rows, columns, tokens = build_rows(records, token_lengths, background)
    labels = build_labels(rows)
    frames = Frames(rows=rows, labels=labels, shift=build_shift(labels, previous), splits=build_splits(rows),
                    columns=columns, has_tokens=tokens is not None, pending_tokens=tokens)
    if background is None and frames.has_tokens:
        frames.tokens()
    return frames


def _describe(values: pd.Series) -> dict | None:
    values = values.dropna()
    if values.empty:
        return None
    return {"count": int(values.size), "min": float(values.min()), "mean": round(float(values.mean()), 3),
            "p50": float(values.quantile(0.5)), "p95": float(values.quantile(0.95)), "max": float(values.max())}


def profile(frames: Frames) -> dict:
    """The version's statistics: JSON-serialisable, and the ``previous`` of the next version's shift checks."""
    rows, labels = frames.rows, frames.labels
    splits = {name: int((rows["split"] == name).sum()) for name in SPLITS}
    splits["none"] = int(rows["split"].isna().sum())
    train = labels["train_count"][labels["train_count"] > 0]
    stats: dict = {
        "rows": int(len(rows)), "splits": splits, "columns": frames.columns, "num_labels": int(len(labels)),
        "labels": {str(k): int(v) for k, v in zip(labels["label"], labels["rows"])},
        "train_labels": {str(k): int(v) for k, v in zip(labels["label"], labels["train_count"])},
        "labels_by_split": {},
        "train_label_min": int(train.min()) if len(train) else 0,
        "train_label_max": int(train.max()) if len(train) else 0,
        "imbalance_ratio": round(float(train.max() / train.min()), 3) if len(train) else None,
        "text_chars": _describe(rows["text_chars"]) if "text_chars" in rows else None,
        "text_tokens": _describe(rows["text_tokens"]) if "text_tokens" in rows else None,
    }
    if "label" in rows:
        valid = rows[_usable_mask(rows["label"])]
        for split, group in valid.groupby("split_key", sort=False):
            counts = group["label"].value_counts(sort=False)
            stats["labels_by_split"][str(split)] = {str(k): int(v) for k, v in counts.items()}
    if "text_exact" in rows:
        stats["duplicates"] = {
            "exact": int(rows.duplicated(["split_key", "text_exact"], keep="first")[rows["text_exact"].notna()].sum()),
            "normalised": int(rows.duplicated(["split_key", "text_normalised"], keep="first")
                              [rows["text_normalised"].notna()].sum()),
        }
        stats["leakage"] = {"exact": int(rows["leak_exact"].notna().sum()),
                            "normalised": int(rows["leak_normalised"].notna().sum())}
    if frames.shift is not None:
        stats["shift"] = {"label_tvd": round(float(frames.shift["tvd_term"].sum()), 4)}
    return stats
