"""The DVC plots through the real ``dvc plots show``: the comparison of base, adapter and full fine-tune with
intervals on one axis, and the search plots saying "search off" instead of drawing nothing."""

import json
import subprocess
import sys
from pathlib import Path

from loraops.core import Layout
from loraops.evaluation import EvaluationSummary
from loraops.evaluation.comparison import comparison_rows, write_comparison_csv
from loraops.search.report import SEARCH_OFF, write_reports
from tests.helpers.projects import copy_repo
from tests.helpers.registry import evaluation


def plots(repo, *paths: str) -> dict:
    """``dvc plots show --json`` (the filled Vega-Lite specs, as DVC renders them) of ``paths``."""
    result = subprocess.run([str(Path(sys.executable).with_name("dvc")), "plots", "show", "--json", *paths],
                            cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["data"]


def test_comparison_and_search_off_plots_render_through_dvc(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, capture_output=True)
    layout = Layout(repo)
    write_reports(layout, [], note=SEARCH_OFF)
    summary = EvaluationSummary.model_validate(evaluation())
    summary.models["adapter"].retention_low, summary.models["adapter"].retention_high = 0.4, 0.6
    write_comparison_csv(comparison_rows(summary), layout.comparison_plot)

    shown = plots(repo, "plots/comparison.csv", "plots/search_trials.csv", "plots/search_pareto.csv")
    spec = shown["plots/comparison.csv"][0]["content"]
    rows = spec["data"]["values"]
    assert {(r["model"], r["metric"]) for r in rows} == {(m, k) for m in ("base", "adapter", "full")
                                                         for k in ("accuracy", "retention")}
    adapter = next(r for r in rows if r["model"] == "adapter" and r["metric"] == "accuracy")
    assert (adapter["value"], adapter["low"], adapter["high"]) == ("0.8", "0.72", "0.88")
    layers = spec["spec"]["layer"]
    assert [layer["mark"]["type"] for layer in layers] == ["bar", "errorbar"]  # bars and their intervals
    assert layers[1]["encoding"]["y"]["field"] == "low" and layers[1]["encoding"]["y2"]["field"] == "high"
    assert layers[0]["encoding"]["y"]["scale"]["domain"] == [0, 1]  # one axis for both metrics, every model

    for name in ("plots/search_trials.csv", "plots/search_pareto.csv"):
        content = shown[name][0]["content"]
        assert [r["note"] for r in content["data"]["values"]] == [SEARCH_OFF]
        text = next(layer for layer in content["layer"] if layer["mark"]["type"] == "text")
        assert text["encoding"]["text"]["field"] == "note"  # the chart prints the note instead of nothing
