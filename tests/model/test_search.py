"""The search stage on the tiny model: resume after SIGKILL, pruning, parallel workers, failures, the choice."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from loraops.config import load_params
from loraops.core import ConfigError, Layout, read_json, read_jsonl, write_jsonl
from loraops.pipeline import run_stage
from loraops.search import NoCompletedTrial, open_study, prepare_search, run_worker, search_stage, study_name
from tests.helpers.projects import loraops_cmd, new_project, run_stages, write_params

# Plain LoRA (no 4-bit setup), one eval per step, a handful of val rows: a trial takes a few seconds.
FAST = {"enabled": True, "max_steps": 2, "eval_steps": 1, "ranks": [2, 4], "target_modules": ["attention"],
        "val_items": 4, "pruner": "none", "sampler": "random", "heartbeat_seconds": 1}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_base) -> Path:
    layout = new_project(tmp_path_factory.mktemp("search") / "prepared", tiny_base)
    run_stages(layout, "base_model", "ingest", "validate", "prepare")
    return layout.root


def project(prepared: Path, tmp_path: Path, tiny_base: Path, method: str = "lora", **search) -> tuple[Path, object]:
    root = tmp_path / "project"
    shutil.copytree(prepared, root, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", ".loraops"))
    write_params(root, tiny_base, search={**FAST, **search}, train={"method": method})
    return root, load_params(root / "params.yaml")


def states(study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {s.name: sum(1 for t in trials if t.state == s) for s in TrialState if any(t.state == s for t in trials)}


def test_sigkill_after_two_trials_then_rerun_completes_only_the_remaining_ones(prepared, tmp_path, tiny_base):
    root, params = project(prepared, tmp_path, tiny_base, n_trials=3)
    layout = Layout(root)
    storage = f"sqlite:///{layout.search_study_dir / 'optuna.db'}"
    first = subprocess.Popen([*loraops_cmd(), "stage", "search"], cwd=root, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while True:
        assert first.poll() is None, f"search ended before it was killed: {first.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "two trials did not complete in time"
        try:
            study = optuna.load_study(study_name=study_name(params, layout), storage=storage)
            done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
        except Exception:  # noqa: BLE001 - the study (KeyError) or its tables may not exist yet
            done = []
        if len(done) >= 2:
            first.send_signal(signal.SIGKILL)
            first.wait()
            break
        time.sleep(0.2)
    killed_at = time.time()
    before = {t.number: t.datetime_complete for t in study.get_trials() if t.state == TrialState.COMPLETE}
    assert len(before) >= 2 and not (layout.search_choice).exists()

    run_stage("search", params, layout)  # the re-run (in this process: one interpreter start less)
    study = optuna.load_study(study_name=study_name(params, layout), storage=storage)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # The trials completed before the kill were kept as they were, not run again.
    assert {t.number: t.datetime_complete for t in complete if t.number in before} == before
    rerun_trials = [t for t in complete if t.datetime_start.timestamp() >= killed_at - 1]
    assert len(rerun_trials) == 3 - len(before)
    # A trial the kill interrupted went stale: marked failed, re-queued with the same params, not counted.
    for stale in (t for t in trials if t.state == TrialState.FAIL):
        retry = [t for t in trials if t.system_attrs.get("failed_trial") == stale.number]
        assert len(retry) == 1 and retry[0].params == stale.params and retry[0].state == TrialState.COMPLETE
    choice = read_json(layout.search_choice)
    assert choice["source"] == "search" and choice["trials"] == {"complete": 3, "pruned": 0, "fail": 0}


def test_pruned_trials_stop_early_and_show_as_pruned_in_the_table_and_mlflow(prepared, tmp_path, tiny_base):
    # Classic scaling (alpha 2 x r): at rsLoRA's larger scaling 0.05 overshoots on the tiny model.
    root, params = project(prepared, tmp_path, tiny_base, n_trials=3, max_steps=4, pruner="successive_halving",
                           reduction_factor=2, learning_rate=[1e-7, 0.05], rslora=False)
    layout = Layout(root)
    study = open_study(params, layout)
    # A learning rate that moves the val loss first, then two that cannot beat it at the first rung.
    for lr in (0.05, 1e-7, 1e-7):
        study.enqueue_trial({"r": 2, "target_modules": "attention", "learning_rate": lr})
    choice = search_stage(params, layout)

    table = {int(r["number"]): r for r in __import__("csv").DictReader((layout.search_dir / "trials.csv").open())}
    assert [table[n]["state"] for n in sorted(table)] == ["complete", "pruned", "pruned"]
    assert int(table[0]["steps"]) == 4 and all(int(table[n]["steps"]) < 4 for n in (1, 2))
    assert choice["trial"] == 0 and choice["trials"] == {"complete": 1, "pruned": 2, "fail": 0}
    # Every trial, pruned ones included, records what it cost up to where it ended; the choice sums them.
    study = open_study(params, layout)
    costs = {t.number: t.user_attrs for t in study.get_trials()}
    for n, attrs in costs.items():
        assert attrs["energy_joules"] > 0 and attrs["cpu_seconds"] > 0 and attrs["wall_seconds"] > 0
        assert attrs["energy_method"] and table[n]["energy_method"] == attrs["energy_method"]
        assert float(table[n]["energy_joules"]) == pytest.approx(attrs["energy_joules"])
    assert {"wall_seconds", "cpu_seconds", "gpu_seconds", "energy_joules", "energy_method"} <= set(table[0])
    assert choice["costed_trials"] == 3
    assert choice["total_energy_joules"] == pytest.approx(sum(a["energy_joules"] for a in costs.values()))
    assert choice["total_cpu_seconds"] == pytest.approx(sum(a["cpu_seconds"] for a in costs.values()))
    assert choice["energy_method"] == ", ".join(sorted({a["energy_method"] for a in costs.values()}))

    client = mlflow.MlflowClient(layout.local_tracking_uri())
    children = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                                  f"tags.mlflow.parentRunId = '{choice['mlflow_run_id']}'")
    by_trial = {int(r.data.tags["search.trial_number"]): r for r in children}
    assert by_trial[0].data.tags["search.state"] == "complete" and by_trial[0].info.status == "FINISHED"
    for n in (1, 2):
        assert by_trial[n].data.tags["search.state"] == "pruned" and by_trial[n].info.status == "KILLED"
        assert len(client.get_metric_history(by_trial[n].info.run_id, "val_loss")) < 4
    assert len(client.get_metric_history(by_trial[0].info.run_id, "val_loss")) == 4
    for n, run in by_trial.items():
        assert run.data.metrics["energy_joules"] == pytest.approx(costs[n]["energy_joules"])
        assert run.data.metrics["cpu_seconds"] == pytest.approx(costs[n]["cpu_seconds"])
        assert run.data.tags["energy_method"] == costs[n]["energy_method"]
    parent = client.get_run(choice["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["search.trials_pruned"] == 2
    assert parent.data.metrics["search.total_energy_joules"] == pytest.approx(choice["total_energy_joules"])
    assert parent.data.tags["search.energy_method"] == choice["energy_method"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "search")} >= {"search/trials.csv",
                                                                                        "search/chosen.json"}
    # The train stage uses the choice.
    run_stage("train", params, layout)
    adapter = read_json(layout.adapter_dir / "adapter_config.json")
    assert adapter["r"] == choice["lora"]["r"] and adapter["lora_alpha"] == choice["lora"]["alpha"]


def test_two_workers_on_one_sqlite_study_split_the_trials_without_duplicates(prepared, tmp_path, tiny_base):
    root, params = project(prepared, tmp_path, tiny_base, n_trials=3)
    layout = Layout(root)
    prepare_search(params, layout)
    # Worker 1 in a subprocess, worker 0 in this process once worker 1 has finished its imports.
    ready = tmp_path / "ready"
    code = ("import json, sys; from pathlib import Path; from loraops.config import load_params; "
            "from loraops.core import Layout; from loraops.search import run_worker; "
            "import loraops.search.trial, loraops.training, loraops.evaluation, transformers.trainer, peft, mlflow; "
            "root = Path(sys.argv[1]); Path(sys.argv[2]).touch(); print('RESULT', json.dumps(run_worker("
            "load_params(root / 'params.yaml'), Layout(root), 1)))")
    other = subprocess.Popen([sys.executable, "-c", code, str(root), str(ready)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not ready.exists():
        assert other.poll() is None and time.monotonic() < deadline, other.stderr.read()[-2000:]
        time.sleep(0.1)
    mine = run_worker(params, layout, 0)
    out, err = other.communicate(timeout=300)
    assert other.returncode == 0, err[-2000:]
    started = [mine["trials_started"], json.loads(out.split("RESULT ", 1)[1])["trials_started"]]

    trials = open_study(params, layout).get_trials()
    counted = [t for t in trials if not t.user_attrs.get("over_budget")]
    assert len(counted) == 3 and all(t.state == TrialState.COMPLETE for t in counted)
    assert sum(started) == len(trials)  # every trial was started by exactly one worker
    assert {t.user_attrs["worker"] for t in counted} == {0, 1}
    assert len({t.user_attrs["mlflow_run_id"] for t in counted}) == 3


def test_failing_trials_are_recorded_and_all_failed_is_a_clear_error(prepared, tmp_path, tiny_base):
    root, params = project(prepared, tmp_path, tiny_base, n_trials=2)
    layout = Layout(root)
    val = read_jsonl(layout.prepared_dir / "val.jsonl")
    # An answer longer than max_length: encoding fails inside every trial's training.
    write_jsonl(layout.prepared_dir / "val.jsonl", [{**r, "completion": "x " * 2000} for r in val])
    with pytest.raises(NoCompletedTrial, match=r"no trial completed \(FAIL: 2\)"):
        search_stage(params, layout)
    rows = list(__import__("csv").DictReader((layout.search_dir / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["fail", "fail"] and not layout.search_choice.exists()
    assert all(float(r["energy_joules"]) > 0 and r["energy_method"] for r in rows)  # a failed trial spent too
    client = mlflow.MlflowClient(layout.local_tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.search.state = 'fail'")
    assert len(runs) == 2 and all("max_length" in r.data.tags["search.error"] for r in runs)


def test_disabled_search_hands_on_trains_own_choice_and_inputs_name_the_study(prepared, tmp_path, tiny_base):
    root, params = project(prepared, tmp_path, tiny_base, enabled=False)
    layout = Layout(root)
    run_stage("search", params, layout)
    choice = read_json(layout.search_choice)
    assert choice == {"lora": params.train.lora.model_dump(), "learning_rate": params.train.learning_rate,
                      "source": "params"}
    assert not (layout.search_study_dir / "optuna.db").exists()
    changed = load_params(root / "params.yaml", ["search.ranks=[8]"])
    runtime_only = load_params(root / "params.yaml", ["search.n_jobs=3"])
    assert study_name(changed, layout) != study_name(params, layout) == study_name(runtime_only, layout)


def test_trials_record_val_accuracy_retention_drop_and_per_item_correctness(prepared, tmp_path, tiny_base):
    root, params = project(prepared, tmp_path, tiny_base, n_trials=2)
    layout = Layout(root)
    choice = search_stage(params, layout)
    study = open_study(params, layout)
    base = study.user_attrs["base_reference"]
    assert len(base["val_correct"]) == 4 and 0 <= base["retention_dev"] <= 1
    trials = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(trials) == 2
    for t in trials:
        assert t.value == t.user_attrs["val_accuracy"] == sum(t.user_attrs["val_correct"]) / 4
        assert t.user_attrs["retention_drop"] == pytest.approx(base["retention_dev"] - t.user_attrs["retention_dev"])
        # The sampler is told how far each trial is over the forgetting bound (<= 0 feasible).
        limit = params.promote.max_retention_drop
        assert t.constraints == {"retention_drop": pytest.approx(t.user_attrs["retention_drop"] - limit)}
    table = list(__import__("csv").DictReader((layout.search_dir / "trials.csv").open()))
    assert {r["retention_drop"] for r in table} == {str(t.user_attrs["retention_drop"]) for t in trials}
    assert {r["feasible"] for r in table} == {"1"}
    client = mlflow.MlflowClient(layout.local_tracking_uri())
    for t in trials:
        metrics = client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
        assert metrics["retention_drop"] == pytest.approx(t.user_attrs["retention_drop"])
        assert metrics["val_accuracy"] == pytest.approx(t.value)
    assert choice["rehearsal_share"] == 0.0 and choice["base_retention"] == base["retention_dev"]
    # rsLoRA by default: a fixed alpha, and the choice hands the scaling on to train.
    assert choice["lora"]["use_rslora"] is True and choice["lora"]["alpha"] == params.search.alpha
    assert choice["max_retention_drop"] == params.promote.max_retention_drop


def test_no_trial_beating_the_base_fails_in_one_line_and_leaves_no_choice(prepared, tmp_path, tiny_base):
    root, params = project(prepared, tmp_path, tiny_base, n_trials=2, beat_base=True)
    layout = Layout(root)
    layout.search_dir.mkdir(parents=True, exist_ok=True)
    layout.search_choice.write_text('{"stale": true}')  # an older choice must not survive the failure
    result = subprocess.run([*loraops_cmd(), "stage", "search"], cwd=root, capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no feasible trial beats the base model on val" in result.stderr
    assert not layout.search_choice.exists() and (layout.search_dir / "trials.csv").is_file()


def test_a_rehearsal_share_mixes_the_answers_in_and_a_missing_file_is_one_clear_line(prepared, tmp_path, tiny_base):
    root, params = project(prepared, tmp_path, tiny_base, n_trials=1, rehearsal_shares=[0.5])
    layout = Layout(root)
    with pytest.raises(ConfigError, match=r"search.rehearsal_shares has \[0.5\] but .*answers.jsonl does not exist"):
        search_stage(params, layout)
    # One rehearsal answer longer than max_length: only a trial that mixes it in can fail on it.
    write_jsonl(layout.rehearsal_answers, [{"prompt": "Say hi.", "completion": "hi " * 2000}])
    with pytest.raises(NoCompletedTrial, match=r"FAIL: 1"):
        search_stage(params, layout)
    trial = open_study(params, layout).get_trials()[0]
    assert trial.user_attrs["rehearsal_share"] == 0.5
    write_jsonl(layout.rehearsal_answers, [{"prompt": "Say hi.", "completion": "hi"}])
    params = load_params(root / "params.yaml")  # a new rehearsal file is a new study
    choice = search_stage(params, layout)
    assert choice["rehearsal_share"] == 0.5


def test_bruteforce_grid_tries_every_configuration_once_and_finishes(prepared, tmp_path, tiny_base):
    # BruteForceSampler ends a study with Study.stop(), which ask/tell trials cannot take: the grid used to
    # die with a RuntimeError on its last configuration.
    root, params = project(prepared, tmp_path, tiny_base, n_trials=2, sampler="bruteforce", beat_base=False,
                           learning_rate=[1e-3, 1e-3])
    choice = search_stage(params, Layout(root))
    study = open_study(params, Layout(root))
    assert sorted(t.params["r"] for t in study.get_trials()) == [2, 4]
    assert choice["trials"] == {"complete": 2, "pruned": 0, "fail": 0}


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_a_trial_scores_the_same_whichever_trial_ran_before_it_on_the_workers_base(method, prepared, tmp_path,
                                                                                    tiny_base):
    # One worker loads the base once: each trial's adapter comes and goes on it (lora: scored in memory,
    # qlora: saved and scored on the full-precision base).
    configs = [{"r": 2, "target_modules": "attention", "learning_rate": 3e-2},
               {"r": 4, "target_modules": "attention", "learning_rate": 1e-3}]
    seen = []
    for order in (configs, configs[::-1]):
        root, params = project(prepared, tmp_path / f"order{len(seen)}", tiny_base, method, n_trials=2,
                               learning_rate=[1e-3, 3e-2], beat_base=False)
        layout = Layout(root)
        study = open_study(params, layout)
        for config in order:
            study.enqueue_trial(config)
        search_stage(params, layout)
        trials = open_study(params, layout).get_trials()
        assert [t.params["r"] for t in trials] == [c["r"] for c in order]
        assert [t.user_attrs["loaded_base"] for t in trials] == [True, False]  # one load for both trials
        seen.append({t.params["r"]: (t.state, t.value, t.user_attrs["val_correct"], t.user_attrs["retention_dev"],
                                     t.intermediate_values, t.user_attrs["steps"]) for t in trials})
    assert seen[0] == seen[1]
    assert all(state == TrialState.COMPLETE and len(steps) == 2 for state, _, _, _, steps, _ in seen[0].values())
