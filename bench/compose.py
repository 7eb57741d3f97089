"""``loraops compose`` measured on the tests' tiny Llama: two tasks trained and registered by the real pipeline,
composed with each combination, scored through the evaluate stage's code, and each combination's update compared
with the exact weighted sum of the sources' updates.

    nice -n 10 python -m bench.compose [--steps 60] [--combinations cat linear svd ties dare_ties]

The demo set's 14 intents are split into two tasks of 7 (orders: cancel, track, refund, ...; account: password,
payment, newsletter, ...), each a project of its own (jsonl source, 20 train and 5 test rows per intent) run
through the DAG in this process (base model, ingest, validate, prepare, train, evaluate, register; no search, no
full fine-tune) into one MLflow store; both versions are made their task's champion (forced where a gate fails).
Then, for each combination, ``compose`` (the library call behind ``loraops compose``) builds, scores and
registers the composed adapter. Recorded (``bench/results/compose_tiny.json``):

- per task: the source's accuracy (its own evaluation) and the composed adapter's, with its interval; the gates,
  the retention drop and the seconds each composition took (download, build, scoring, registration);
- ``update_error``: over every adapted layer, ||composed update - (w1 dW1 + w2 dW2)|| / ||w1 dW1 + w2 dW2|| with
  weights (1, 1): how far the combination is from the exact weighted sum (TIES/DARE prune on purpose);
- ``identity_error``: the same with weights (1, 0) against dW1 alone, as compose saves the result (scaling 1),
  and ``identity_error_peft_scaling`` as PEFT would apply it (rsLoRA inherited from the first source).

The tiny base is a random 2-layer, 64-wide Llama (its embeddings scaled up so that an adapter can move its
answers at all) trained for seconds: its accuracies sit at chance, so they show what compose measures and
costs, not what a combination does to a real model; the update errors hold for any model.
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


def _base(folder: Path, embed_scale: float) -> Path:
    """The tests' tiny Llama with its (tied) embeddings scaled up: at the default init its logits are nearly flat
    and its final norm is not adapted, so a LoRA adapter can hardly move its answers."""
    import torch
    from transformers import AutoModelForCausalLM

    from bench.serve import _tiny_base

    base = _tiny_base(folder)
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(embed_scale)
    model.save_pretrained(base, safe_serialization=True)
    return base


def update_errors(base_dir: Path, adapters: list[Path], combination: str) -> dict[str, float]:
    """``update_error``, ``identity_error`` and ``identity_error_peft_scaling`` (module docstring), and the
    combined adapter's ``rank``."""
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    from loraops.modeling import load_base

    found = {}
    for key, weights in (("update_error", [1.0, 1.0]), ("identity", [1.0, 0.0])):
        model = PeftModel.from_pretrained(load_base(base_dir), adapters[0], adapter_name="s0", is_trainable=False)
        model.load_adapter(str(adapters[1]), adapter_name="s1", is_trainable=False)
        torch.manual_seed(0)
        options = {"density": 0.5} if combination.startswith(("ties", "dare", "magnitude")) else {}
        model.add_weighted_adapter(["s0", "s1"], weights, "c", combination_type=combination, **options)
        error = {"saved": 0.0, "peft": 0.0}
        norm = 0.0
        with torch.no_grad():
            for module in model.modules():
                if not isinstance(module, LoraLayer) or "c" not in module.lora_A:
                    continue
                exact = sum(w * module.get_delta_weight(n) for n, w in zip(("s0", "s1"), weights))
                saved = module.lora_B["c"].weight @ module.lora_A["c"].weight  # scaling 1, as compose saves it
                error["saved"] += float((saved - exact).norm() ** 2)
                error["peft"] += float((saved * module.scaling["c"] - exact).norm() ** 2)
                norm += float(exact.norm() ** 2)
                found["rank"] = module.r["c"]
        if key == "update_error":
            found[key] = (error["saved"] / norm) ** 0.5
        else:
            found["identity_error"] = (error["saved"] / norm) ** 0.5
            found["identity_error_peft_scaling"] = (error["peft"] / norm) ** 0.5
    return found


def _project(root: Path, name: str, labels: list[str], base: Path, rows: list[dict], steps: int, lr: float) -> Path:
    import yaml

    from loraops.core import write_jsonl
    from tests.helpers.projects import new_project

    layout = new_project(root, base)
    write_jsonl(root / "data" / "task.jsonl", [r for r in rows if r["label"] in labels])
    params = yaml.safe_load(layout.params_file.read_text())
    params["data"] = {**params["data"], "source": "jsonl", "path": "data/task.jsonl", "split_column": "split"}
    params["search"]["enabled"] = False
    # A random 2-layer model learns the labels only in full precision (LoRA, not QLoRA), with every linear
    # layer adapted and a high learning rate.
    params["train"].update(method="lora", max_steps=steps, learning_rate=lr, eval_steps=None, save_steps=None,
                           early_stopping_patience=None, progress_bar=False, batch_size=8)
    params["train"]["lora"].update(r=8, alpha=16, target_modules="all-linear")
    params["baseline"]["enabled"] = False
    params["eval"]["batch_size"] = 32
    params["registry"].update(experiment="bench-compose", model_name=name)
    layout.params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per task")
    parser.add_argument("--lr", type=float, default=0.01, help="the adapter's learning rate")
    parser.add_argument("--embed-scale", type=float, default=10.0, help="the tiny base's embeddings scaled by this")
    parser.add_argument("--combinations", nargs="+", default=["cat", "linear", "svd", "ties", "dare_ties"])
    parser.add_argument("--out", type=Path, default=Path("bench/results/compose_tiny.json"))
    args = parser.parse_args()
    out = args.out.resolve()
    from loraops.cli.app import QUIET_ENV

    for key, value in {**QUIET_ENV, "HF_HUB_OFFLINE": "1"}.items():
        os.environ.setdefault(key, value)

    from loraops.config import load_params
    from loraops.core import Layout
    from loraops.core.tracking import connect
    from loraops.data.demo import generate_demo_dataset
    from loraops.pipeline import PIPELINE, run_stage
    from loraops.registry import promote
    from loraops.registry.compose import compose

    results: dict = {"machine": machine_info(), "model": f"tests' tiny Llama (2 layers, hidden 64), embeddings x{args.embed_scale:g}",
                     "steps": args.steps, "learning_rate": args.lr, "tasks": {}, "combinations": {}}
    with tempfile.TemporaryDirectory(prefix="loraops-bench-compose-") as tmp:
        folder = Path(tmp)
        os.chdir(folder)  # nothing MLflow writes by default lands in the repository
        base = _base(folder, args.embed_scale)
        rows = generate_demo_dataset(seed=0, train_per_intent=20, test_per_intent=5)
        account = sorted({r["label"] for r in rows} - set(ORDERS))
        tasks = {"task-orders": ORDERS, "task-account": account}
        roots = {name: _project(folder / name, name, labels, base, rows, args.steps, args.lr) for name, labels in tasks.items()}
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
                "adapter_retention_drop": evaluation["models"]["adapter"].get("retention_drop"),
                "gates": registered["gates"], "decision": decision,
                "pipeline_seconds": round(time.perf_counter() - started, 1)}
            print(name, results["tasks"][name], flush=True)
        layout = Layout(roots["task-orders"])
        adapters = [Layout(root).adapter_dir for root in roots.values()]
        for combination in args.combinations:
            params = load_params(layout.params_file, [f"compose.combination={combination}"])
            started = time.perf_counter()
            result = compose(connect(layout, params.registry), layout, params, f"composed-{combination}",
                             list(tasks), [f"task-account={roots['task-account']}"])
            seconds = time.perf_counter() - started
            record = result["composition"]
            results["combinations"][combination] = {
                "seconds": round(seconds, 1), "decision": result["decision"], "gates": result["gates"],
                **update_errors(base, adapters, combination),
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
