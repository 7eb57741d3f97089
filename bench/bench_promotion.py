"""Concurrent promotions against a real `mlflow server` process: latency and whether the registry stays
consistent when many runs promote at once (more than the 2 the test uses).

    python -m bench.bench_promotion --candidates 8 --out bench/results/promotion_concurrent.json

N candidate versions (all passing the gates, same scores) are promoted by N threads released together.
Promotions must serialise: following ``promotion.replaced`` back from the final champion has to visit
every candidate exactly once and end at the initial champion, and ``previous`` must be the champion's
``promotion.replaced``. No model training is involved: the versions share one run's evidence.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from bench.machine import machine_info


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import mlflow

    from loraops.config import PromoteParams
    from loraops.core import Layout
    from loraops.core.tracking import quiet_mlflow_client
    from loraops.registry import CHAMPION, PREVIOUS, REGISTRATION_TAG, promote
    from tests.helpers.registry import MlflowServer, client_for, evaluation, tracking_for

    quiet_mlflow_client()
    with tempfile.TemporaryDirectory() as tmp:
        server = MlflowServer(Path(tmp)).start()
        try:
            client, name = client_for(server.uri), "bench-promotion"
            layout = Layout(Path(tmp))  # only for the Tracking objects: the server URI is given explicitly
            experiment = client.create_experiment("bench")
            run = client.create_run(experiment)
            reports = Path(tmp) / "reports"
            reports.mkdir()
            (reports / "eval.json").write_text(json.dumps(evaluation()))
            (reports / "validation.json").write_text(json.dumps({"success": True, "errors": 0, "warnings": 0,
                                                                "failures": [], "stats": {}}))
            client.log_artifacts(run.info.run_id, str(reports), "reports")
            client.create_registered_model(name)
            tags = {"eval.adapter.accuracy": "0.8000", "eval.test_set_sha256": "test-set-1", REGISTRATION_TAG: "complete"}
            versions = [client.create_model_version(name, f"runs:/{run.info.run_id}/reports", run.info.run_id,
                                                    tags=tags).version for _ in range(args.candidates + 1)]
            initial, candidates = str(versions[0]), [str(v) for v in versions[1:]]
            promote(tracking_for(layout, server.uri, 3, 0.2), name, initial, PromoteParams())

            barrier, seconds, errors = threading.Barrier(len(candidates)), {}, []

            def promote_now(version: str) -> None:
                try:
                    barrier.wait()
                    started = time.perf_counter()
                    promote(tracking_for(layout, server.uri, 3, 0.2), name, version, PromoteParams())
                    seconds[version] = time.perf_counter() - started
                except Exception as exc:
                    errors.append(repr(exc))

            started = time.perf_counter()
            threads = [threading.Thread(target=promote_now, args=(v,)) for v in candidates]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            total = time.perf_counter() - started

            aliases = {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
            chain, current = [], aliases[CHAMPION]
            while current and current != initial and len(chain) <= len(candidates):
                chain.append(current)
                current = client.get_model_version(name, current).tags.get("promotion.replaced")
            consistent = (not errors and current == initial and sorted(chain) == sorted(candidates)
                          and aliases.get(PREVIOUS) == (chain[1] if len(chain) > 1 else initial))
        finally:
            server.stop()
    report = {"benchmark": "promotion_concurrent", "machine": machine_info(), "mlflow": mlflow.__version__,
              "load_average_1m_at_end": os.getloadavg()[0],  # the box is shared: read timings with this
              "candidates": len(candidates), "wall_seconds": total,
              "per_promotion_seconds": sorted(seconds.values()), "errors": errors,
              "champion": aliases[CHAMPION], "previous": aliases.get(PREVIOUS), "replaced_chain": chain,
              "consistent": consistent}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("candidates", "wall_seconds", "errors", "consistent")}))
    if not consistent:
        raise SystemExit("registry inconsistent after concurrent promotions")


if __name__ == "__main__":
    main()
