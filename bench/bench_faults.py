"""Reliability under injected faults: for each fault, what it left behind, whether the next run repaired it,
and whether anything was lost (a champion, a complete version, an alias on a broken version).

    python -m bench.bench_faults --out bench/results/faults.json

Faults (real stores, real processes, nothing mocked; tests/helpers/faults.py injects them):
- ``kill -9`` of ``loraops stage register`` at every window of registration and promotion (SQLite store);
- the tracking server (a real ``mlflow server``) killed at two of those windows;
- a promotion's lease expiring under a live holder (SIGSTOP past the TTL, then SIGCONT);
- two concurrent runs in one project folder (the project lock);
- two concurrent retrains of one project (the same lock, taken by the retrain flow).

Each row is ``{"fault", "left", "repaired", "nothing_lost"}``; ``nothing_lost`` holds when, after the fault
and the next run, the previous champion or the new version is champion, every alias names a complete
version, every complete version that existed before the fault still exists, and no version is left
incomplete or "promoting".
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import machine_info


def state(client, name: str) -> dict:
    from loraops.registry import REGISTRATION_TAG, lock_name

    versions = {str(v.version): v for v in client.search_model_versions(f"name='{name}'")}
    aliases = {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}
    try:
        client.get_registered_model(lock_name(name))
        lock = True
    except Exception:  # noqa: BLE001
        lock = False
    return {"versions": {n: {"complete": v.tags.get(REGISTRATION_TAG) == "complete",
                             "decision": v.tags.get("decision")} for n, v in versions.items()},
            "aliases": aliases, "lock": lock,
            "replaced": versions[aliases["champion"]].tags.get("promotion.replaced") if "champion" in aliases else None}


def describe(before: dict, after: dict) -> str:
    new = sorted(set(after["versions"]) - set(before["versions"]), key=int)
    parts = []
    for number in new:
        v = after["versions"][number]
        parts.append(f"version {number} {'complete' if v['complete'] else 'incomplete'}"
                     f"{', decision ' + v['decision'] if v['decision'] else ''}")
    parts.append("aliases " + ", ".join(f"{a}={n}" for a, n in sorted(after["aliases"].items())))
    if after["lock"]:
        parts.append("promotion lock held by the dead run")
    if after["aliases"].get("previous") != after["replaced"]:
        parts.append("previous not yet what the champion replaced")
    return "; ".join(parts)


def judged(before: dict, crashed: dict, final: dict, new_version: str | None = None) -> tuple[bool, bool]:
    """(repaired, nothing_lost) of a registry that went before -> crashed -> final (after the next run)."""
    complete_before = {n for n, v in before["versions"].items() if v["complete"]}
    # The champion is the one before, a version this fault's run created, or the version a concurrent
    # promotion legitimately made champion (``new_version``).
    champion_ok = crashed["aliases"].get("champion") in {before["aliases"].get("champion"), new_version,
                                                         *(set(crashed["versions"]) - set(before["versions"]))} - {None}
    aliases_ok = all(crashed["versions"][n]["complete"] for n in crashed["aliases"].values()) and \
        all(final["versions"][n]["complete"] for n in final["aliases"].values())
    kept = complete_before <= set(final["versions"])
    repaired = (all(v["complete"] and v["decision"] != "promoting" for v in final["versions"].values())
                and not final["lock"] and final["aliases"].get("previous") == final["replaced"])
    return repaired, bool(champion_ok and aliases_ok and kept and "champion" in final["aliases"])


def lock_held(layout) -> bool:
    """Whether another process holds the project's lock now (tried without waiting)."""
    from loraops.core.process import ProjectBusy, project_lock

    try:
        with project_lock(layout.cache_dir, "bench probe"):
            return False
    except ProjectBusy:
        return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from loraops.config import PromoteParams
    from loraops.core import Layout, write_json
    from loraops.core.tracking import quiet_mlflow_client
    from loraops.registry import promote
    from tests.helpers import faults
    from tests.helpers.projects import copy_repo, loraops_cmd, run_stages, write_params
    from tests.helpers.registry import UPSTREAM, MlflowServer, client_for, evaluation, register, tracking_for
    from tests.helpers.tiny_model import build_tiny_model

    quiet_mlflow_client()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    rows: list[dict] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from loraops.config import PrepareParams
        from loraops.data import user_message
        from loraops.data.demo import generate_demo_dataset

        demo = generate_demo_dataset(seed=0, train_per_intent=20, test_per_intent=5)
        labels = sorted({r["label"] for r in demo})
        corpus = [r["text"] for r in demo] + labels + [user_message("", labels, PrepareParams()),
                                                       PrepareParams().system_prompt]
        base = build_tiny_model(work / "base", corpus * 3)
        root = copy_repo(work / "project")
        write_params(root, base)
        layout = Layout(root)
        run_stages(layout, *UPSTREAM)
        uri = layout.local_tracking_uri()
        client = client_for(uri)
        params_args = ["-p", str(layout.params_file), "-S", "registry.retries=1", "-S", "registry.backoff_seconds=0.1"]

        # 1. kill -9 of the registering process at every window.
        for window in faults.WINDOWS:
            name = f"bench-{window.name}"
            register(layout, name, evaluation())
            before = state(client, name)
            write_json(layout.eval_metrics, evaluation(adapter=0.82))
            killed = faults.run(window.fault, "stage", "register", *params_args, "-S", f"registry.model_name={name}")
            assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
            crashed = state(client, name)
            register(layout, name, evaluation(adapter=0.83))
            final = state(client, name)
            repaired, kept = judged(before, crashed, final)
            rows.append({"fault": f"kill -9 of `loraops stage register` after {window.what.split(',')[0]} "
                                  f"(window {window.name})", "left": describe(before, crashed),
                         "repaired": repaired, "nothing_lost": kept})

        # 2. the tracking server killed at a window.
        (work / "server").mkdir()
        server = MlflowServer(work / "server").start()
        os.environ["MLFLOW_TRACKING_URI"] = server.uri
        server_client = client_for(server.uri)
        for window in (faults.WINDOWS[0], faults.WINDOWS[5]):
            name = f"bench-server-{window.name}"
            register(layout, name, evaluation())
            before = state(server_client, name)
            write_json(layout.eval_metrics, evaluation(adapter=0.82))
            fault = window.fault.rsplit(":", 1)[0] + ":kill-server"
            failed = faults.run(fault, "stage", "register", *params_args, "-S", f"registry.model_name={name}",
                                env={"LORAOPS_FAULT_SERVER_PGID": str(os.getpgid(server.proc.pid))})
            server.start()
            crashed = state(server_client, name)
            register(layout, name, evaluation(adapter=0.83))
            final = state(server_client, name)
            repaired, kept = judged(before, crashed, final)
            line = (failed.stderr.strip().splitlines() or [""])[-1][:300]
            rows.append({"fault": f"tracking server killed (SIGKILL) after {window.what.split(',')[0]} "
                                  f"(window {window.name}); the command exited {failed.returncode}: {line}",
                         "left": describe(before, crashed), "repaired": repaired, "nothing_lost": kept})
        server.stop()
        os.environ.pop("MLFLOW_TRACKING_URI")

        # 3. a lease expiring under a live holder.
        name = "bench-lease"
        register(layout, name, evaluation())
        held = [str(register(layout, name, evaluation(adapter=0.81), "promote.min_gain_over_base=0.9")["version"])
                for _ in range(2)]
        before = state(client, name)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(faults.REPO / "src"), str(faults.REPO)]))
        stopped = subprocess.Popen(faults.command("after:update_model_version:promoting:stop", "promote", held[0],
                                                  "-p", str(layout.params_file), "-S", f"registry.model_name={name}",
                                                  "-S", "promote.lock_ttl_seconds=3"),
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in stopped.stdout:
            if faults.READY_MARK in line:
                break
        time.sleep(0.5)
        t0 = time.monotonic()
        promote(tracking_for(layout, uri), name, held[1], PromoteParams(lock_ttl_seconds=3))
        waited = time.monotonic() - t0
        stopped.send_signal(signal.SIGCONT)
        _, err = stopped.communicate(timeout=120)
        final = state(client, name)
        repaired, kept = judged(before, final, final, new_version=held[1])
        rows.append({"fault": "promotion lease expired under a live holder (SIGSTOP past lock_ttl_seconds=3, then "
                              f"SIGCONT); the second promotion waited {waited:.1f} s, broke the lease and promoted",
                     "left": f"{describe(before, final)}; the stopped holder exited {stopped.returncode}: "
                             f"{(err.strip().splitlines() or [''])[-1][:300]}",
                     "repaired": repaired, "nothing_lost": kept and final["aliases"]["champion"] == held[1]})

        # 4. two concurrent runs in one folder, 5. two concurrent retrains: the project lock.
        for fault, cmd in (("two concurrent `loraops stage train` in one project folder", ["stage", "train"]),
                           ("two concurrent retrains of one project (flows.retrain)",
                            [sys.executable, "-c", "from flows.retrain import retrain; retrain(root='.', force=True)"])):
            full = cmd if cmd[0] == sys.executable else [*loraops_cmd(), *cmd]
            renv = dict(os.environ, PYTHONPATH=os.pathsep.join([str(faults.REPO / "src"), str(faults.REPO)]),
                        PREFECT_LOGGING_LEVEL="WARNING")
            adapter_before = sorted(p.name for p in layout.adapter_dir.iterdir())
            first = subprocess.Popen(full, cwd=root, env=dict(renv, PREFECT_HOME=str(work / "prefect-1")),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 300
            while not lock_held(layout):
                time.sleep(0.2)
                assert time.monotonic() < deadline and first.poll() is None, first.stderr.read()[-2000:]
            second = subprocess.run(full, cwd=root, env=dict(renv, PREFECT_HOME=str(work / "prefect-2")),
                                    capture_output=True, text=True, timeout=600)
            out, err = first.communicate(timeout=1800)
            refused = second.returncode != 0 and "another loraops process is working on this project" in \
                (second.stderr + second.stdout)
            intact = first.returncode == 0 and sorted(p.name for p in layout.adapter_dir.iterdir()) == adapter_before
            rows.append({"fault": fault,
                         "left": f"the second stopped at once (exit {second.returncode}): "
                                 f"{[l for l in (second.stderr + second.stdout).splitlines() if 'another' in l][:1]}; "
                                 f"the first finished (exit {first.returncode}) with its outputs whole",
                         "repaired": refused, "nothing_lost": refused and intact})

    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "faults", "machine": machine_info(), "load_average_1m_at_end": os.getloadavg()[0],
              "wall_seconds": round(time.monotonic() - started, 1), "faults": rows,
              "all_nothing_lost": all(r["nothing_lost"] for r in rows)}
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"rows": len(rows), "all_nothing_lost": result["all_nothing_lost"]}))


if __name__ == "__main__":
    main()
