"""The search's results as files: the trials table, the DVC plot data and a Pareto plot (PNG).

``models/search/trials.csv`` has one row per counted trial (val accuracy, retention on the dev pool, its
drop against the base and whether that is feasible, and what the trial cost); ``plots/search_trials.csv`` and ``plots/search_pareto.csv``
feed ``dvc plots`` (metric vs trainable parameters, front marked); the PNG (infeasible trials marked) and a
markdown table go to MLflow and to the Prefect artifact.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from loraops.core import Layout, atomic_write_text
from loraops.search.select import TrialResult, is_feasible, pareto_front
from loraops.search.study import COST_KEYS

COLUMNS = ["number", "state", "r", "alpha", "use_rslora", "target_modules", "learning_rate", "rehearsal_share",
           "dropout", "trainable_params", "metric", "retention_dev", "retention_drop", "feasible", "steps", "pareto",
           *COST_KEYS]
# The plots' templates (.dvc/plots/search_*.json) print a row's note instead of drawing an empty chart.
PLOT_COLUMNS = [*COLUMNS, "note"]
SEARCH_OFF = "search off (search.enabled: false)"


def rows(results: list[TrialResult], max_retention_drop: float | None = None) -> list[dict]:
    """One row per trial; ``feasible`` (1/0, empty before a trial completes) needs ``max_retention_drop``."""
    front = {r.number for r in pareto_front(results)}
    out = []
    for r in sorted(results, key=lambda r: r.number):
        p = r.params
        feasible = (int(is_feasible(r, max_retention_drop))
                    if max_retention_drop is not None and r.state == "COMPLETE" else None)
        out.append({"number": r.number, "state": r.state.lower(), "r": p.get("r"), "alpha": p.get("alpha"),
                    "use_rslora": p.get("use_rslora"), "target_modules": p.get("target_modules"),
                    "learning_rate": p.get("learning_rate"), "rehearsal_share": p.get("rehearsal_share"),
                    "dropout": p.get("dropout"), "trainable_params": r.trainable_params, "metric": r.metric,
                    "retention_dev": r.retention, "retention_drop": r.retention_drop, "feasible": feasible,
                    "steps": r.steps, "pareto": int(r.number in front),
                    **{key: getattr(r, key) for key in COST_KEYS}})
    return out


def search_cost(results: list[TrialResult]) -> dict:
    """What the search's trials cost together (``TrainChoice``'s totals): sums over the trials that recorded
    a cost (a trial of an older study may not have), their count, and every method that went into them."""
    costed = [r for r in results if r.energy_joules is not None]
    if not costed:
        return {}
    gpu = [r.gpu_seconds for r in costed if r.gpu_seconds is not None]
    return {"costed_trials": len(costed), "total_wall_seconds": sum(r.wall_seconds or 0.0 for r in costed),
            "total_cpu_seconds": sum(r.cpu_seconds or 0.0 for r in costed),
            "total_gpu_seconds": sum(gpu) if gpu else None,
            "total_energy_joules": sum(r.energy_joules for r in costed),
            "energy_method": ", ".join(sorted({r.energy_method for r in costed if r.energy_method}))}


def to_csv(table: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def markdown(table: list[dict]) -> str:
    head = ["number", "state", "r", "target_modules", "learning_rate", "rehearsal_share", "trainable_params",
            "metric", "retention_drop", "feasible", "steps", "pareto", "energy_joules"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else ("" if row[c] is None else str(row[c]))
                 for c in head]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_png(results: list[TrialResult], target: Path, max_retention_drop: float | None = None) -> bool:
    """Metric vs trainable parameters (log x), Pareto front as a line, infeasible trials (retention-dev drop
    above ``max_retention_drop``) as crosses; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    done = [r for r in results if r.state == "COMPLETE" and r.metric is not None and r.trainable_params]
    front = pareto_front(results)
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = [r for r in done if max_retention_drop is None or is_feasible(r, max_retention_drop)]
    over = [r for r in done if r not in ok]
    ax.scatter([r.trainable_params for r in ok], [r.metric for r in ok], label="completed trials")
    if over:
        ax.scatter([r.trainable_params for r in over], [r.metric for r in over], marker="x", color="grey",
                   label=f"retention drop > {max_retention_drop:g} (infeasible)")
    ax.plot([r.trainable_params for r in front], [r.metric for r in front], "r-o", label="Pareto front")
    for r in done:
        ax.annotate(f"#{r.number} r={r.params.get('r')}", (r.trainable_params, r.metric), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("val accuracy")
    ax.set_title("search: metric vs adapter size")
    ax.legend(loc="lower right")
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return True


def write_reports(layout: Layout, results: list[TrialResult], note: str | None = None,
                  max_retention_drop: float | None = None) -> list[dict]:
    """Write the table, the DVC plot files and (with completed trials) the PNG; return the table rows.
    ``note`` (the search is off) becomes the plots' only row, so ``dvc plots show`` says so."""
    table = rows(results, max_retention_drop)
    atomic_write_text(layout.search_dir / "trials.csv", to_csv(table, COLUMNS))
    atomic_write_text(layout.search_dir / "trials.md", markdown(table) if note is None else f"{note}\n")
    all_plot, front_plot = layout.search_plots
    noted = [{"note": note}] if note else []
    atomic_write_text(all_plot, to_csv([r for r in table if r["state"] == "complete"] + noted, PLOT_COLUMNS))
    atomic_write_text(front_plot, to_csv([r for r in table if r["pareto"]] + noted, PLOT_COLUMNS))
    png = layout.search_dir / "pareto.png"
    png.unlink(missing_ok=True)
    if any(r["state"] == "complete" for r in table):
        plot_png(results, png, max_retention_drop)
    return table


def read_table(layout: Layout) -> list[dict]:
    """The trials table as written (strings), e.g. for a Prefect table artifact."""
    with (layout.search_dir / "trials.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))
