"""What a validation returns: failures a user can act on, the data profile, and where the Data Docs are."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

MAX_EXAMPLES = 5
_SHOWN_FAILURES = 12
_EXAMPLE_CHARS = 80


@dataclass
class Failure:
    check: str  # the expectation (with its column) or the named check, e.g. "train/test leakage (normalised)"
    message: str  # one line naming the problem
    rows: int  # how many rows offend
    examples: list[tuple[int, str]] = field(default_factory=list)  # (1-based row number, text or value)
    severity: str = "error"  # "error" or "warning"


def _show(value: str) -> str:
    """A one-line, visible rendering: control characters and U+FFFD are escaped, long texts cut."""
    text = value if len(value) <= _EXAMPLE_CHARS else value[: _EXAMPLE_CHARS - 1] + "…"
    return "".join(ch if ch.isprintable() and ch != "\ufffd" else ch.encode("unicode_escape").decode()
                   for ch in text)


@dataclass
class ValidationReport:
    success: bool  # False iff any error-severity failure
    failures: list[Failure]
    stats: dict  # JSON-serialisable profile; the next version's shift checks compare against it
    docs_index: Path | None  # the Great Expectations Data Docs index.html
    # Every expectation with its outcome (loraops.validation.docs_html.expectation_rows), for the one-page docs.
    expectations: list[dict] = field(default_factory=list)

    @property
    def errors(self) -> list[Failure]:
        return [f for f in self.failures if f.severity == "error"]

    @property
    def warnings(self) -> list[Failure]:
        return [f for f in self.failures if f.severity != "error"]

    def summary(self) -> str:
        """One screen: verdict, then each failed check with its row count and a few examples."""
        verdict = "passed" if self.success else "FAILED"
        splits = ", ".join(f"{k} {v}" for k, v in self.stats.get("splits", {}).items() if v)
        lines = [f"Data validation {verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s) "
                 f"on {self.stats.get('rows', 0)} rows ({splits or 'no splits'}), "
                 f"{self.stats.get('num_labels', 0)} labels."]
        ordered = self.errors + self.warnings
        for failure in ordered[:_SHOWN_FAILURES]:
            lines.append(f"{failure.severity.upper():7} {failure.check}: {failure.message}")
            for row, value in failure.examples[:3]:
                lines.append(f"          row {row}: {_show(value)}")
        if len(ordered) > _SHOWN_FAILURES:
            lines.append(f"... and {len(ordered) - _SHOWN_FAILURES} more (see the JSON summary)")
        if self.docs_index is not None:
            lines.append(f"Data Docs: {self.docs_index}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        """The JSON summary (a DVC metrics file): verdict, counts, every failure and the key statistics."""
        keys = ("rows", "splits", "num_labels", "train_label_min", "train_label_max", "imbalance_ratio",
                "text_chars", "text_tokens", "duplicates", "leakage", "shift")
        return {
            "success": self.success,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "failures": [{**asdict(f), "examples": [list(e) for e in f.examples]} for f in self.failures],
            "stats": {k: self.stats[k] for k in keys if k in self.stats},
            "docs_index": str(self.docs_index) if self.docs_index else None,
        }
