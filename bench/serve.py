"""The adapter library under load: 8 adapters of different ranks as champions on one base, served by
``loraops serve``'s library and HTTP server, against a local MLflow store.

    flock /work/heavy.lock python -m bench.serve [--base models/base] [--seconds 20]

Without ``--base`` the base is the tests' tiny Llama (built in seconds); the adapters are LoRA adapters
with random B matrices (so they answer differently), registered with the hashes serving checks. Measured:

- ``resident_mb``: the process's RSS growth from before the base was loaded to all 8 adapters loaded;
  ``merged_models_mb``: 8 merged copies (8 x the base's weight bytes), what serving merged models would hold.
- ``switch_ms_p50/p99``: the extra time of a forward pass (one generated token) whose adapter differs from
  the previous pass's, over the median of passes on the same adapter as before (per-row selection has no
  switch step of its own: this is what changing adapters costs). Passes go through serving's row routing
  (``row_router``). The distribution: ``switch_ms_p90``/``switch_ms_max``, and the same statistic over the
  passes that did not switch (``same_adapter_extra_ms_p50/p90/p99``: the forward pass's own spread); the
  garbage collector is counted (``gc_during_passes``: passes during which a collection of generation 2 ran)
  and the library freezes what it loaded (``gc.freeze``), so a full collection does not walk it. Where the
  tail comes from: ``switch_cpu_ms_p50/p99``, the same statistic over this thread's CPU time per pass (what
  the pass computed), ``switched_waited_ms_p50/p99`` (wall minus CPU time: waiting for a core),
  ``slowest_switched_passes`` (the slowest 2%: wall, CPU, involuntary context switches, the machine's steal
  ticks, minor page faults), ``minor_page_faults_per_pass_p50``, ``steal_ticks_during_passes`` and the load
  average; ``switch_paired_ms_p50/p99``: each switched pass
  over the same-adapter pass of its own triple (a slow spell of the machine longer than a triple cancels).
- ``set_adapter_ms_p50/p99``: the switch itself, with no forward pass in it: PEFT's ``set_adapter`` (the
  active adapter of every LoRA layer; ``inference_mode``, so nothing becomes trainable), each call to another
  adapter than the last. Serving routes rows with ``adapter_names`` and never calls it; it is what a server
  that switches the active adapter between batches would pay per switch. ``name_swap_us_p99``: the library's
  own swap of a moved champion (the served entry replaced under its lock, with no generation waiting).
- ``mixed_vs_single_throughput``: rows per second of forward passes over an 8-row batch whose rows all use
  different adapters, over the same batch on one adapter (each of the 8 in turn), both through serving's
  row routing (``serving_path``: ``stacked``, the stacked per-row sums of ``loraops.registry.row_routing``).
  ``peft_single/mixed_forward_rows_per_second`` and ``peft_mixed_vs_single_throughput``: the same batches
  through PEFT's own per-row ``adapter_names`` path (what serving used before, and still the fallback);
  ``stacked_vs_peft_mixed_speedup``: the mixed batch's rows per second, stacked over PEFT's;
  ``mixed_vs_active_single_throughput``: the served mixed batch over the one-adapter batch through PEFT's
  active adapter (``set_adapter`` per batch, then plain LoRA with no routing).
  ``single_active_forward_rows_per_second``: the one-adapter batch through the active adapter (no
  ``adapter_names``), PEFT's plain path: what routing one-adapter rows per row costs.
  ``grouped_forward_rows_per_second``: the mixed batch grouped by adapter, one forward pass per adapter
  through its active adapter (the alternative to PEFT's per-row path).
- ``champion_pickup_seconds``: from moving a champion alias to the server answering with the new version
  (poll every 0.5 s), the slower of two moves, made while the load test runs.
- ``failed_requests``: non-200 answers of the load test (bounded threads, requests and seconds, on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.machine import machine_info

RANKS = (2, 4, 4, 8, 8, 16, 16, 32)
LABELS = ["track_order", "cancel_order", "request_refund", "change_address"]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _steal_ticks() -> int:
    """The machine's steal time so far (``/proc/stat``, all CPUs, in clock ticks): time the hypervisor gave
    this virtual machine's CPUs to someone else."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) if len(fields) > 8 else 0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _tiny_base(folder: Path) -> Path:
    from loraops.config import PrepareParams
    from loraops.data import user_message
    from loraops.data.demo import generate_demo_dataset
    from tests.helpers.tiny_model import build_tiny_model

    rows = generate_demo_dataset(seed=0, train_per_intent=20, test_per_intent=5)
    labels = sorted({r["label"] for r in rows})
    corpus = [r["text"] for r in rows] + labels + [user_message("", labels, PrepareParams()),
                                                   PrepareParams().system_prompt]
    return build_tiny_model(folder / "base", corpus * 3)


def _make_adapter(base_dir: Path, rank: int, seed: int, out: Path) -> Path:
    """A LoRA adapter of ``rank`` with random B (answers differ per adapter) and its loraops_prompt.json."""
    import torch
    from peft import LoraConfig, get_peft_model

    from loraops.config import PrepareParams
    from loraops.core import write_json
    from loraops.data import PROMPT_FILE, prompt_spec, render_row
    from loraops.data.prompts import TEXT_SLOT
    from loraops.modeling import load_base, load_tokenizer

    model = get_peft_model(load_base(base_dir), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    adapter = out / "adapter"
    model.save_pretrained(adapter)
    template = render_row({"text": TEXT_SLOT, "label": ""}, LABELS, load_tokenizer(base_dir), PrepareParams())["prompt"]
    write_json(adapter / PROMPT_FILE, prompt_spec(LABELS, PrepareParams(), template))
    return out


def _register(client, uri: str, name: str, folder: Path, base_sha: str) -> str:
    from loraops.registry.lineage import MODEL_SHA256_TAG, model_sha256

    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    experiment = client.get_experiment_by_name("bench-serve") or client.get_experiment(
        client.create_experiment("bench-serve"))
    run = client.create_run(experiment.experiment_id)
    client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id,
                                          tags={MODEL_SHA256_TAG: model_sha256(folder), "base_model.sha256": base_sha})
    client.set_registered_model_alias(name, "champion", version.version)
    return str(version.version)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, default=None, help="A base model folder (default: the tiny model)")
    parser.add_argument("--seconds", type=float, default=20.0, help="The load test's length (at most)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--switches", type=int, default=200, help="Adapter switches timed")
    parser.add_argument("--rounds", type=int, default=10, help="Rounds of the throughput comparison")
    parser.add_argument("--max-requests", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve.json"))
    args = parser.parse_args()

    import torch

    from loraops.core import Layout
    from loraops.core.tracking import quiet_mlflow_client
    from loraops.modeling import base_content_sha256, safetensors_bytes
    from loraops.registry.library import AdapterLibrary
    from loraops.registry.row_routing import row_router
    from loraops.registry.scoring_server import Limits, ScoringServer
    from tests.helpers.registry import client_for, tracking_for

    quiet_mlflow_client()
    with tempfile.TemporaryDirectory(prefix="loraops-bench-serve-") as tmp:
        root = Path(tmp)
        base_dir = args.base.resolve() if args.base else _tiny_base(root)
        base_sha = base_content_sha256(base_dir)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        client = client_for(uri)
        names = [f"bench-serve-{i}-r{rank}" for i, rank in enumerate(RANKS)]
        folders = [_make_adapter(base_dir, rank, i, root / f"adapter-{i}") for i, rank in enumerate(RANKS)]
        spare = _make_adapter(base_dir, RANKS[0], 99, root / "adapter-spare")
        for name, folder in zip(names, folders):
            _register(client, uri, name, folder, base_sha)
        adapter_mb = sum(safetensors_bytes(f / "adapter") for f in folders) / 2**20
        base_mb = safetensors_bytes(base_dir) / 2**20

        rss_before = _rss_mb()
        library = AdapterLibrary(tracking_for(Layout(root), uri), base_dir, names, batch_size=8)
        library.refresh()
        resident_mb = _rss_mb() - rss_before
        assert len(library.versions()) == len(names), library.refused()

        texts = ["where is my parcel", "I want my money back", "please cancel my order", "new address please"]
        rng = random.Random(0)
        for name in names:  # warm-up: every adapter once
            library.answer([(texts[0], name)])
        print(f"loaded {len(names)} adapters: resident {resident_mb:.1f} MB", flush=True)
        # One forward pass per call (what each generated token costs), the adapter picked per row as serving does;
        # a call whose adapter differs from the previous call's is a switch.
        router = row_router(library.model)
        same, switched, previous = [], [], None
        encoded = library.tokenizer([texts[0]], return_tensors="pt")
        served = [library.state.served[n].adapter_name for n in names]
        full_gcs = [0]

        def count_gc(phase: str, info: dict) -> None:
            if phase == "start" and info.get("generation") == 2:
                full_gcs[0] += 1
        gc.callbacks.append(count_gc)
        gc_passes = {"same": 0, "switched": 0}
        # Per pass also this thread's CPU time and involuntary context switches (torch computes on this thread
        # alone with one intra-op thread): wall time far over CPU time is time spent waiting for a core.
        cpu = {"same": [], "switched": []}
        preempted = {"same": [], "switched": []}
        steal = {"same": [], "switched": []}  # the hypervisor's steal time (both vCPUs, 10 ms ticks) per pass
        faults = {"same": [], "switched": []}  # minor page faults of this thread per pass (fresh memory pages)
        sequence: list[tuple[str, float]] = []
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        with library.lock, torch.inference_mode():
            for i in range(3 * args.switches):
                name = served[0] if i % 3 != 2 else served[1 + (i // 3) % (len(served) - 1)]
                before, cpu_started = full_gcs[0], time.thread_time()
                switches_before = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
                steal_before = _steal_ticks()
                faults_before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
                started = time.perf_counter()
                router([name], **encoded)
                kind = "same" if name == previous else "switched"
                (same if kind == "same" else switched).append((time.perf_counter() - started) * 1000)
                cpu[kind].append((time.thread_time() - cpu_started) * 1000)
                preempted[kind].append(resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw - switches_before)
                steal[kind].append(_steal_ticks() - steal_before)
                faults[kind].append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults_before)
                sequence.append((kind, (same if kind == "same" else switched)[-1]))
                gc_passes[kind] += full_gcs[0] != before
                previous = name
        load_after = Path("/proc/loadavg").read_text().split()[:3]
        gc.callbacks.remove(count_gc)
        baseline = statistics.median(same)
        switch = [max(0.0, t - baseline) for t in switched]
        same_extra = [max(0.0, t - baseline) for t in same]
        cpu_baseline = statistics.median(cpu["same"])
        cpu_switch = [max(0.0, t - cpu_baseline) for t in cpu["switched"]]
        waited = [w - c for w, c in zip(switched, cpu["switched"])]
        slowest = sorted(range(len(switched)), key=switched.__getitem__)[-max(1, len(switched) // 50):]
        # Each switched pass against the same-adapter pass of its own triple (same, switch away, switch back):
        # a slow spell of the machine that spans the triple cancels out.
        paired = []
        for start in range(0, len(sequence) - 2, 3):
            triple = sequence[start:start + 3]
            base_ms = [t for kind, t in triple if kind == "same"]
            if base_ms:
                paired += [max(0.0, t - base_ms[0]) for kind, t in triple if kind == "switched"]
        set_ms = []
        with library.lock:
            for i in range(args.switches):
                started = time.perf_counter()
                library.model.set_adapter(served[i % len(served)], inference_mode=True)
                set_ms.append((time.perf_counter() - started) * 1000)
        swap_us = []
        for _ in range(args.switches):
            entry = library.state.served[names[0]]
            started = time.perf_counter()
            with library.lock:
                library.state.served[names[0]] = entry
            swap_us.append((time.perf_counter() - started) * 1e6)

        # Throughput of the same 8-row batch, forward passes (the cost of every generated token): each row on its
        # own adapter against all rows on one adapter (every adapter in turn, total rows over total time).
        # Whole answers are not compared: a batch runs until its longest answer ends, and the random adapters'
        # answers differ in length, which would measure the adapters, not the routing.
        rows = library.tokenizer([texts[i % 4] for i in range(len(served))], return_tensors="pt", padding=True)

        def seconds(choices: list[list[str]]) -> float:
            """The batches through serving's row routing."""
            started = time.perf_counter()
            with library.lock, torch.inference_mode():
                for chosen in choices:
                    router(chosen, **rows)
            return time.perf_counter() - started

        def peft_seconds(choices: list[list[str]]) -> float:
            """The batches through PEFT's per-row ``adapter_names`` path."""
            started = time.perf_counter()
            with library.lock, torch.inference_mode():
                for chosen in choices:
                    library.model(**rows, adapter_names=chosen)
            return time.perf_counter() - started
        def active_seconds(groups: list[list[tuple[str, list[int]]]]) -> float:
            """Each batch as forward passes of its rows grouped by adapter, each through the active adapter."""
            started = time.perf_counter()
            with library.lock, torch.inference_mode():
                for batch in groups:
                    for name, indices in batch:
                        library.model.set_adapter(name, inference_mode=True)
                        library.model(input_ids=rows["input_ids"][indices],
                                      attention_mask=rows["attention_mask"][indices])
            return time.perf_counter() - started
        singles, mixes = [[name] * len(served) for name in served], [list(served)] * len(served)
        everyone = list(range(len(served)))
        active_singles = [[(name, everyone)] for name in served]
        grouped_mixes = [[(name, [i]) for i, name in enumerate(served)]] * len(served)
        serving_path = router.path(list(served))
        seconds(singles), seconds(mixes), active_seconds(active_singles), active_seconds(grouped_mixes)  # warm-up
        peft_seconds(singles), peft_seconds(mixes)
        single_s = mixed_s = active_s = grouped_s = peft_single_s = peft_mixed_s = 0.0
        for _ in range(args.rounds):  # interleaved, so a change in the machine's load hits all alike
            single_s += seconds(singles)
            mixed_s += seconds(mixes)
            active_s += active_seconds(active_singles)
            grouped_s += active_seconds(grouped_mixes)
            peft_single_s += peft_seconds(singles)
            peft_mixed_s += peft_seconds(mixes)
        total_rows = args.rounds * len(singles) * len(served)
        single, mixed = total_rows / single_s, total_rows / mixed_s
        active, grouped = total_rows / active_s, total_rows / grouped_s
        peft_single, peft_mixed = total_rows / peft_single_s, total_rows / peft_mixed_s
        started = time.perf_counter()
        library.answer([(texts[i % 4], name) for i, name in enumerate(names)])
        mixed_answer_ms = (time.perf_counter() - started) * 1000

        server = ScoringServer(library, "127.0.0.1", 0, poll_seconds=0.5, limits=Limits(max_rows=16)).start()
        latencies, failures, sent, lock, stop = [], [], [0], threading.Lock(), threading.Event()
        deadline = time.monotonic() + args.seconds

        def load() -> None:
            local = random.Random(threading.get_ident())
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    if sent[0] >= args.max_requests:
                        return
                    sent[0] += 1
                rows = [{"text": local.choice(texts), "adapter": local.choice(names)} for _ in range(4)]
                request = urllib.request.Request(server.url + "/invocations", json.dumps(
                    {"dataframe_records": rows}).encode(), {"Content-Type": "application/json"})
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        answered = len(json.loads(response.read())["predictions"])
                    problem = None if answered == 4 else f"{answered} predictions for 4 rows"
                except Exception as exc:  # an HTTP error status raises too
                    problem = repr(exc)[:200]
                with lock:
                    latencies.append((time.perf_counter() - started) * 1000)
                    if problem is not None:
                        failures.append(problem)

        def health_version(name: str) -> str | None:
            with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
                return json.loads(response.read())["served"].get(name)

        workers = [threading.Thread(target=load) for _ in range(args.threads)]
        for worker in workers:
            worker.start()
        pickups, moved = [], names[0]
        new_version = _register(client, uri, moved, spare, base_sha)  # registering also moves the alias
        for target in (new_version, "1"):
            if target == "1":
                client.set_registered_model_alias(moved, "champion", "1")  # a rollback by hand
            started = time.monotonic()
            while health_version(moved) != target and time.monotonic() - started < 60:
                time.sleep(0.05)
            pickups.append(time.monotonic() - started if health_version(moved) == target else float("inf"))
        for worker in workers:
            worker.join()
        stop.set()
        server.stop()
        library.close()

    report = {
        "benchmark": "serve", "machine": machine_info(), "base": str(args.base) if args.base else "tiny test Llama",
        "adapters": len(RANKS), "ranks": list(RANKS), "base_mb": round(base_mb, 2),
        "adapters_mb": round(adapter_mb, 3), "resident_mb": round(resident_mb, 1),
        "merged_models_mb": round(len(RANKS) * base_mb, 1),
        "resident_goal_mb": round(base_mb + adapter_mb * 1.2, 1),
        "switch_ms_p50": round(_pct(switch, 0.5), 2), "switch_ms_p99": round(_pct(switch, 0.99), 2),
        "switch_ms_p90": round(_pct(switch, 0.9), 2), "switch_ms_max": round(max(switch), 2),
        "switches_timed": len(switch),
        "same_adapter_extra_ms_p50": round(_pct(same_extra, 0.5), 2),
        "same_adapter_extra_ms_p90": round(_pct(same_extra, 0.9), 2),
        "same_adapter_extra_ms_p99": round(_pct(same_extra, 0.99), 2),
        "gc_during_passes": gc_passes,
        "switch_cpu_ms_p50": round(_pct(cpu_switch, 0.5), 2), "switch_cpu_ms_p99": round(_pct(cpu_switch, 0.99), 2),
        "switched_waited_ms_p50": round(_pct(waited, 0.5), 2), "switched_waited_ms_p99": round(_pct(waited, 0.99), 2),
        "slowest_switched_passes": [{"wall_ms": round(switched[i], 1), "cpu_ms": round(cpu["switched"][i], 1),
                                     "involuntary_context_switches": preempted["switched"][i],
                                     "steal_ticks": steal["switched"][i],
                                     "minor_page_faults": faults["switched"][i]} for i in slowest],
        "minor_page_faults_per_pass_p50": _pct(faults["same"] + faults["switched"], 0.5),
        "steal_ticks_during_passes": sum(steal["same"]) + sum(steal["switched"]),
        "switch_paired_ms_p50": round(_pct(paired, 0.5), 2), "switch_paired_ms_p99": round(_pct(paired, 0.99), 2),
        "involuntary_context_switches_per_pass_mean": round(statistics.mean(preempted["same"] + preempted["switched"]), 2),
        "load_average_during_switches": [load_before, load_after],
        "set_adapter_ms_p50": round(_pct(set_ms, 0.5), 3), "set_adapter_ms_p99": round(_pct(set_ms, 0.99), 3),
        "name_swap_us_p50": round(_pct(swap_us, 0.5), 1), "name_swap_us_p99": round(_pct(swap_us, 0.99), 1),
        "same_adapter_forward_ms_p50": round(baseline, 2),
        "switched_forward_ms_p50": round(_pct(switched, 0.5), 2),
        "switched_forward_ms_p99": round(_pct(switched, 0.99), 2),
        "single_forward_rows_per_second": round(single, 1), "mixed_forward_rows_per_second": round(mixed, 1),
        "single_active_forward_rows_per_second": round(active, 1),
        "grouped_forward_rows_per_second": round(grouped, 1),
        "grouped_vs_single_throughput": round(grouped / single, 3),
        "mixed_8_row_answer_ms": round(mixed_answer_ms, 1),
        "mixed_vs_single_throughput": round(mixed / single, 3), "serving_path": serving_path,
        "peft_single_forward_rows_per_second": round(peft_single, 1),
        "peft_mixed_forward_rows_per_second": round(peft_mixed, 1),
        "peft_mixed_vs_single_throughput": round(peft_mixed / peft_single, 3),
        "stacked_vs_peft_mixed_speedup": round(mixed / peft_mixed, 3),
        "mixed_vs_active_single_throughput": round(mixed / active, 3),
        "champion_pickup_seconds": round(max(pickups), 2), "pickups_seconds": [round(p, 2) for p in pickups],
        "load_test": {"threads": args.threads, "requests": len(latencies), "rows_per_request": 4,
                      "latency_ms_p50": round(_pct(latencies, 0.5), 1) if latencies else None,
                      "latency_ms_p99": round(_pct(latencies, 0.99), 1) if latencies else None},
        "failed_requests": len(failures), "failures": failures[:5], "cuda": torch.cuda.is_available(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("switch_ms_p50", "switch_ms_p99", "set_adapter_ms_p99",
                                             "name_swap_us_p99", "same_adapter_extra_ms_p99",
                                             "gc_during_passes", "switch_cpu_ms_p99", "switched_waited_ms_p99",
                                             "switch_paired_ms_p99", "steal_ticks_during_passes",
                                             "mixed_vs_single_throughput",
                                             "peft_mixed_vs_single_throughput", "mixed_vs_active_single_throughput",
                                             "stacked_vs_peft_mixed_speedup",
                                             "grouped_vs_single_throughput",
                                             "resident_mb", "merged_models_mb", "champion_pickup_seconds",
                                             "failed_requests")}))


if __name__ == "__main__":
    main()
