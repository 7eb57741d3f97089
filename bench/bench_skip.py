"""How long an unchanged scheduled retrain takes (acceptance: at most 15 s, training nothing), on a local team
stack of real processes (PostgreSQL, Prefect server + process worker, MLflow server; tests/helpers/team_stack.py).

The project is this repository with the tiny test model (the first, training run takes a minute instead of
the real model's several); what a skipped run does does not depend on the model's size except for
fingerprinting the base weights, which is measured separately on the real SmolLM2 weights (--real-base).

    python -m bench.bench_skip [--repeats 5] [--real-base /path/to/models/base] --out bench/results/skip_unchanged.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import machine_info
from tests.helpers.team_stack import FINAL, LocalStack, committed_project

HERE = Path(__file__).resolve().parent


def tiny_base(dest: Path) -> Path:
    """The same tiny Llama the tests build (tests/conftest.py: tiny_base)."""
    from loraops.config import PrepareParams
    from loraops.data import user_message
    from loraops.data.demo import generate_demo_dataset
    from tests.helpers.tiny_model import build_tiny_model

    rows = generate_demo_dataset(seed=0, train_per_intent=20, test_per_intent=5)
    labels = sorted({r["label"] for r in rows})
    corpus = [r["text"] for r in rows] + labels + [user_message("", labels, PrepareParams()),
                                                   PrepareParams().system_prompt]
    return build_tiny_model(dest, corpus * 3)


def run_once(client, deployment_id) -> dict:
    created = time.perf_counter()
    run_id = client.create_flow_run_from_deployment(deployment_id).id
    while True:
        run = client.read_flow_run(run_id)
        if run.state and run.state.type.value in FINAL:
            wall = time.perf_counter() - created
            break
        time.sleep(0.25)
    return {"state": run.state.type.value, "trigger_to_final_seconds": round(wall, 2),
            "flow_run_seconds": round((run.end_time - run.start_time).total_seconds(), 2),
            "queued_seconds": round((run.start_time - run.created).total_seconds(), 2)}


def fingerprint_seconds(base: Path) -> dict:
    """retrain_fingerprint on a project whose model.base is ``base``: cold (no hash cache), then warm."""
    from loraops.config import load_params
    from loraops.core import Layout
    from loraops.pipeline import retrain_fingerprint

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(HERE.parent / "params.yaml", root / "params.yaml")
        layout = Layout(root)
        params = load_params(layout.params_file, [f"model.base={base}"])
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            retrain_fingerprint(params, layout)
            timings.append(round(time.perf_counter() - started, 3))
    weights = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    return {"base": str(base), "weights_bytes": weights, "cold_seconds": timings[0], "warm_seconds": timings[1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--real-base", type=Path, default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    for key, value in {"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(key, value)
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    (HERE / "work").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="skip-", dir=HERE / "work"))
    stack = LocalStack(work / "stack", work / "dvc-remote")
    try:
        repo = committed_project(work / "repo", tiny_base(work / "base"))
        stack.start()
        deploy = subprocess.run([str(Path(sys.executable).with_name("loraops")), "deploy", "-p",
                                 str(repo / "params.yaml")],
                                cwd=repo, env=stack.env(), capture_output=True, text=True)
        if deploy.returncode != 0:
            raise SystemExit(deploy.stdout + deploy.stderr)
        stack.start_worker(pythonpath=os.environ.get("PYTHONPATH", ""))
        with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("loraops-retrain/retrain")
            first = run_once(client, deployment.id)
            if first["state"] != "COMPLETED":
                raise SystemExit(f"the training run ended {first['state']}:\n{stack.logs()}")
            skips = [run_once(client, deployment.id) for _ in range(args.repeats)]
        import mlflow

        versions = mlflow.MlflowClient(tracking_uri=stack.tracking_uri).search_model_versions("name = 'tiny-intent'")
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    walls = [s["trigger_to_final_seconds"] for s in skips]
    report = {"benchmark": "retrain_skip_unchanged", "machine": machine_info(), "database": stack.database,
              # Shared machine: the load during the run says how much other work the timings competed with.
              "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
              "goal_seconds": 15, "training_run": first, "skipped_runs": skips,
              "max_trigger_to_final_seconds": max(walls), "max_flow_run_seconds": max(s["flow_run_seconds"] for s in skips),
              "all_completed": all(s["state"] == "COMPLETED" for s in skips),
              "registered_versions_after": len(versions)}
    if args.real_base:
        report["fingerprint_real_base"] = fingerprint_seconds(args.real_base.resolve())
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
