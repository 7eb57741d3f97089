"""``loraops compose`` measured on the tests' tiny Llama: two tasks trained and registered by the real pipeline,
then composed with each combination and scored through the evaluate stage's code.

    nice -n 10 python -m bench.compose [--steps 120] [--combinations cat linear ties dare_ties]

The demo set's 14 intents are split into two tasks of 7 (orders: cancel, track, refund, ...; account:
password, payment, newsletter, ...), each a project of its own (jsonl source, 20 train and 5 test rows per
intent) run through the whole DAG in this process (base model, ingest, validate, prepare, train, the full
fine-tune, evaluate, register) into one MLflow store; both versions become their task's champion (forced when a
gate fails: the tiny model is no real model). Then, for each combination, ``compose`` (the library call behind
``loraops compose``) builds the adapter, scores it on both tasks' test sets and on retention, and registers it.

Recorded per combination (``bench/results/compose_tiny.json``): each task's accuracy alone (the source's own
evaluation) and composed, with the composed interval; the gates; the retention drop; the composed rank; and the
seconds the composition took (build, scoring, registration). The tiny model is a 2-layer, 64-wide Llama trained
for a couple of minutes on CPU: these numbers show what compose measures and what it costs, not what a
combination does to a real model.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.machine import machine_info

ORDERS = ["cancel_order", "track_order", "request_refund", "exchange_item", "change_shipping_address",
          "report_damaged_item", "product_availability"]


def _project(root: Path, name: str, labels: list[str], base: Path, rows: list[dict], steps: int) -> Path:
    import yaml

    from loraops.core import write_jsonl
    from tests.helpers.projects import new_project

    layout = new_project(root, base)
    write_jsonl(root / "data" / "task.jsonl", [r for r in rows if r["label"] in labels])
    params = yaml.safe_load(layout.params_file.read_text())
    params["data"] = {**params["data"], "source": "jsonl", "path": "data/task.jsonl", "split_column": "split"}
    params["search"]["enabled"] = False
    params["train"].update(max_steps=steps, learning_rate=0.003, eval_steps=None, save_steps=None,
                           early_stopping_patience=None, progress_bar=False, batch_size=8)
    params["train"]["lora"].update(r=8, alpha=16)
    params["eval"]["batch_size"] = 32
    params["registry"].update(experiment="bench-compose", model_name=name)
    layout.params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120, help="training steps per task (adapter and full)")
    parser.add_argument("--combinations", nargs="+", default=["cat", "linear", "svd", "ties", "dare_ties"])
    parser.add_argument("--out", type=Path, default=Path("bench/results/compose_tiny.json"))
    args = parser.parse_args()
    out = args.out.resolve()
    from loraops.cli.app import QUIET_ENV

    for key, value in {**QUIET_ENV, "HF_HUB_OFFLINE": "1"}.items():
        os.environ.setdefault(key, value)

    from bench.serve import _tiny_base
    from loraops.config import load_params
    from loraops.core import Layout
    from loraops.core.tracking import connect
    from loraops.data.demo import generate_demo_dataset
    from loraops.pipeline import PIPELINE, run_stage
    from loraops.registry import promote
    from loraops.registry.compose import compose

    results: dict = {"machine": machine_info(), "model": "tests' tiny Llama (2 layers, hidden 64)",
                     "steps": args.steps, "tasks": {}, "combinations": {}}
    with tempfile.TemporaryDirectory(prefix="loraops-bench-compose-") as tmp:
        folder = Path(tmp)
        os.chdir(folder)  # nothing MLflow writes by default lands in the repository
        base = _tiny_base(folder)
        rows = generate_demo_dataset(seed=0, train_per_intent=20, test_per_intent=5)
        account = sorted({r["label"] for r in rows} - set(ORDERS))
        tasks = {"task-orders": ORDERS, "task-account": account}
        roots = {name: _project(folder / name, name, labels, base, rows, args.steps) for name, labels in tasks.items()}
        # One store for both tasks and the compositions: the first project's (its experiment's artifacts there).
        os.environ["MLFLOW_TRACKING_URI"] = Layout(roots["task-orders"]).local_tracking_uri()
        for name, root in roots.items():
            layout = Layout(root)
            params = load_params(layout.params_file)
            started = time.perf_counter()
            stages = {stage: run_stage(stage, params, layout) for stage in PIPELINE}
            registered = stages["register"]
            decision = registered["decision"]
            if not decision.startswith("champion"):
                tracking = connect(layout, params.registry)
                decision = promote(tracking, name, str(registered["version"]), params.promote,
                                   force_reason="bench: the tiny model is no real model")["decision"]
            evaluation = json.loads(layout.eval_metrics.read_text())
            results["tasks"][name] = {
                "labels": tasks[name], "test_items": evaluation["test_items"],
                "adapter_accuracy": evaluation["models"]["adapter"]["accuracy"],
                "base_accuracy": evaluation["models"]["base"]["accuracy"],
                "full_accuracy": evaluation["models"].get("full", {}).get("accuracy"),
                "adapter_retention_drop": evaluation["models"]["adapter"].get("retention_drop"),
                "gates": registered["gates"], "decision": decision,
                "pipeline_seconds": round(time.perf_counter() - started, 1)}
            print(name, results["tasks"][name], flush=True)
        layout = Layout(roots["task-orders"])
        for combination in args.combinations:
            params = load_params(layout.params_file, [f"compose.combination={combination}"])
            started = time.perf_counter()
            result = compose(connect(layout, params.registry), layout, params, f"composed-{combination}",
                             list(tasks), [f"task-account={roots['task-account']}"])
            seconds = time.perf_counter() - started
            record = result["composition"]
            results["combinations"][combination] = {
                "seconds": round(seconds, 1), "decision": result["decision"], "gates": result["gates"],
                "retention_drop": record.get("retention_drop"),
                "tasks": {s["model"]: {"alone": s.get("source_score"), "composed": s["score"],
                                       "interval": [s["score_low"], s["score_high"]]} for s in record["sources"]}}
            print(combination, results["combinations"][combination], flush=True)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
