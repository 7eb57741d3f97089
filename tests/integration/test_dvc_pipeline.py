"""The whole DAG through `dvc repro` in a copy of this repository, on the tiny model and a small dataset."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from loraops.pipeline import PIPELINE
from loraops.registry.summary import KEYS
from tests.helpers.projects import copy_repo, dvc, write_params

pytestmark = pytest.mark.integration


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def digests(repo: Path) -> dict[str, str]:
    out = {}
    for top in ("data/raw", "data/prepared", "models/adapter", "models/base", "metrics/eval.json"):
        paths = [repo / top] if (repo / top).is_file() else sorted((repo / top).rglob("*"))
        for path in paths:
            if path.is_file() and path.name != ".gitignore":
                out[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_base):
    repo = copy_repo(tmp_path_factory.mktemp("dvc") / "repo")
    write_params(repo, tiny_base)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], cwd=repo, check=True)
    return repo


def test_repro_runs_every_stage_in_order_and_registers(repo):
    output = dvc(repo, "repro")
    assert ran(output) == list(PIPELINE)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(PIPELINE)
    dataset_out = lock["stages"]["ingest"]["outs"][0]
    assert dataset_out["path"] == "data/raw/dataset.jsonl" and len(dataset_out["md5"]) == 32
    assert (repo / "metrics" / "registration.json").is_file()
    assert (repo / "mlflow.db").is_file()
    # The search ran (tiny settings); its MLflow run is nested in the pipeline run, which lasted the whole repro
    # although every stage ran in its own process.
    import json, mlflow
    choice = json.loads((repo / "models" / "search" / "chosen.json").read_text())
    run_id = json.loads((repo / "metrics" / "registration.json").read_text())["run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert choice["source"] == "search" and run.data.tags["search.run_id"] == choice["mlflow_run_id"]
    assert client.get_run(choice["mlflow_run_id"]).data.tags["mlflow.parentRunId"] == run_id
    assert run.info.start_time <= (repo / "data" / "raw" / "dataset.jsonl").stat().st_mtime * 1000


def terminal_screen(repo: Path, command: str, columns: int = 120) -> str:
    """What a ``columns``-wide terminal shows for ``command``: a real tmux pane, DVC's own pager (less)."""
    if not shutil.which("tmux") or not shutil.which("less"):
        pytest.skip("tmux and less are needed to look at a terminal (Debian packages tmux, less)")
    tmux = ["tmux", "-L", f"loraops-test-{os.getpid()}"]  # a server of its own, whatever else runs tmux
    env_path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    subprocess.run([*tmux, "new-session", "-d", "-s", "dvc", "-x", str(columns), "-y", "50",
                    f"cd {repo} && PATH={env_path} COLUMNS={columns} DVC_PAGER=less {command}; sleep 60"],
                   check=True)
    try:
        screen, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(1)
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", "dvc"], capture_output=True,
                                    text=True).stdout
            if "(END)" in screen or "Experiment" in screen and screen.count("\n") > 5 and "workspace" in screen:
                break
        return screen
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def test_headline_metrics_read_at_a_glance_in_dvc_at_120_columns(repo):
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    # Every key but recov (undefined when the tiny full fine-tune does not beat the base) is there.
    assert set(KEYS) - {"recov"} <= set(summary) <= set(KEYS) and summary["decision"] in ("champion", "challenger")
    # dvc metrics show: one file, ten keys, one line that fits.
    shown = dvc(repo, "metrics", "show").splitlines()
    table = [line for line in shown if line.strip()]
    assert table[0].split()[0] == "Path" and "metrics/summary.json" in table[1]
    assert max(len(line.rstrip()) for line in table) <= 120, shown
    assert "metrics/eval.json" not in "\n".join(shown)  # the detailed records are no DVC metrics any more
    # dvc exp show, as a 120-column terminal shows it (DVC pipes it to less -S): the headline metrics whole.
    screen = terminal_screen(repo, "dvc exp show")
    lines = screen.splitlines()
    header = next(line for line in lines if "Experiment" in line)
    row = next(line for line in lines if line.strip().startswith("workspace"))
    headline = ["decision", "adapter", "base", "full", "ci_lo", "ci_hi", "forget"]
    cells = row.split()
    assert header.split()[2:2 + len(headline)] == headline, screen
    assert cells[2] == summary["decision"] and "…" not in " ".join(cells[:2 + len(headline)]), screen
    for key in ("adapter", "base", "full"):
        assert float(cells[2 + headline.index(key)]) == pytest.approx(summary[key]), (key, screen)


def test_second_repro_runs_nothing(repo):
    output = dvc(repo, "repro")
    assert ran(output) == [], output


def test_changing_learning_rate_reruns_only_train_and_later_stages(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["learning_rate"] = 5e-4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = dvc(repo, "repro")
    assert ran(output) == ["train", "evaluate", "register"], output


def test_push_then_pull_restores_data_and_adapter_byte_identical(repo):
    before = digests(repo)
    assert any(k.startswith("models/adapter/") for k in before) and "data/raw/dataset.jsonl" in before
    dvc(repo, "push")
    shutil.rmtree(repo / ".dvc" / "cache")
    for top in ("data/raw", "data/prepared", "models/adapter", "models/base", "metrics/eval.json"):
        target = repo / top
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    dvc(repo, "pull")
    assert digests(repo) == before
    assert ran(dvc(repo, "repro")) == []
