"""The Data Docs as one self-contained HTML page: what the MLflow run shows (``validation/data_docs.html``).

Great Expectations' own site (``reports/validation/index.html``) is a folder of pages that load Bootstrap and
jQuery from CDNs and link to each other by relative paths; opened in MLflow's artifact viewer (one file, no
network) its results table stays empty and unstyled. This page holds the same results, every expectation of
every suite with its outcome, observed value and offending examples, plus loraops' own reading of them, with
inline styles and no script, so it renders anywhere, offline.
"""

from __future__ import annotations

import html
import json
from typing import Any

from loraops.validation.report import ValidationReport

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem;color:#1f2328;font-size:14px}
h1{font-size:1.4rem;margin:0 0 .4rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
table{border-collapse:collapse;width:100%;margin:.3rem 0 1rem}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.warn{color:#9a6700;font-weight:600}code{font-size:12px;background:#f6f8fa;padding:0 .2rem}
.verdict{display:inline-block;padding:.2rem .6rem;border-radius:1rem;color:#fff}
.ok{background:#1a7f37}.bad{background:#cf222e}.muted{color:#656d76}
"""


PROFILE_KEYS = ("rows", "splits", "num_labels", "train_labels", "train_label_min", "train_label_max",
                "imbalance_ratio", "text_chars", "text_tokens", "duplicates", "leakage", "shift")


def _e(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str))


def expectation_rows(results: dict[str, Any], examples: int = 5) -> list[dict[str, Any]]:
    """Plain rows from Great Expectations' suite results: suite, expectation, its arguments and outcome."""
    rows = []
    for suite, result in results.items():
        for item in result.results:
            config = item.expectation_config
            outcome = item.result or {}
            rows.append({
                "suite": suite, "expectation": config.type, "success": bool(item.success),
                "kwargs": {k: v for k, v in config.kwargs.items() if k != "batch_id"},
                "observed": outcome.get("observed_value"), "unexpected": outcome.get("unexpected_count"),
                "unexpected_percent": outcome.get("unexpected_percent"), "elements": outcome.get("element_count"),
                "examples": list(outcome.get("partial_unexpected_list") or [])[:examples],
                "error": (item.exception_info or {}).get("exception_message")
                if (item.exception_info or {}).get("raised_exception") else None})
    return rows


def render_html(report: ValidationReport, title: str) -> str:
    """One page: verdict, loraops' findings with examples, every expectation by suite, the data profile."""
    verdict = ('<span class="verdict ok">passed</span>' if report.success
               else '<span class="verdict bad">FAILED</span>')
    stats = report.stats
    splits = ", ".join(f"{k} {v}" for k, v in stats.get("splits", {}).items() if v) or "no splits"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{_e(title)} {verdict}</h1>",
             f"<p>{len(report.errors)} error(s), {len(report.warnings)} warning(s) on {stats.get('rows', 0)} rows "
             f"({_e(splits)}), {stats.get('num_labels', 0)} labels. Checked by Great Expectations; suites "
             "generated from the <code>validate</code> params.</p>",
             "<h2>Findings</h2>"]
    if report.failures:
        parts.append("<table><tr><th>severity</th><th>check</th><th>rows</th><th>what</th><th>examples "
                     "(row: value)</th></tr>")
        for failure in report.errors + report.warnings:
            cls = "fail" if failure.severity == "error" else "warn"
            shown = "<br>".join(f"{row}: {_e(value)}" for row, value in failure.examples[:5])
            parts.append(f"<tr><td class='{cls}'>{_e(failure.severity)}</td><td>{_e(failure.check)}</td>"
                         f"<td>{failure.rows}</td><td>{_e(failure.message)}</td><td>{shown}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p class='pass'>Every check passed.</p>")
    by_suite: dict[str, list[dict]] = {}
    for row in report.expectations:
        by_suite.setdefault(row["suite"], []).append(row)
    for suite, rows in by_suite.items():
        good = sum(r["success"] for r in rows)
        parts.append(f"<h2>Suite <code>{_e(suite)}</code>: {good} of {len(rows)} expectations met</h2>")
        parts.append("<table><tr><th></th><th>expectation</th><th>arguments</th><th>result</th>"
                     "<th>unexpected examples</th></tr>")
        for r in rows:
            mark = "<td class='pass'>&#10003;</td>" if r["success"] else "<td class='fail'>&#10007;</td>"
            if r["error"]:
                result = f"error: {_e(r['error'])}"
            elif r["unexpected"] is not None:
                result = f"{r['unexpected']} of {r['elements']} unexpected ({r['unexpected_percent'] or 0:.1f} %)"
            else:
                result = f"observed {_e(r['observed'])}"
            examples = "<br>".join(_e(x) for x in r["examples"])
            args = ", ".join(f"{k}={_e(v)}" for k, v in r["kwargs"].items())
            parts.append(f"<tr>{mark}<td><code>{_e(r['expectation'])}</code></td><td>{args}</td>"
                         f"<td>{result}</td><td>{examples}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Profile</h2><table>")
    for key in PROFILE_KEYS:
        if stats.get(key) is None:
            continue
        value = stats[key]
        parts.append(f"<tr><th>{_e(key)}</th><td><code>{_e(value)}</code></td></tr>")
    parts.append("</table><p class='muted'>Written by loraops from the Great Expectations results; the full "
                 "Great Expectations site is reports/validation/index.html in the project.</p></body></html>")
    return "\n".join(parts)
