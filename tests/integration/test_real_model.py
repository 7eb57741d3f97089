"""The demo on the real SmolLM2-135M (slow: minutes on a CPU; `make test-slow`, not CI)."""

import subprocess

import mlflow
import pytest

from tests.helpers.projects import REPO, copy_repo, loraops_cmd
from loraops.core import Layout, read_json

pytestmark = pytest.mark.slow


def test_demo_defaults_train_an_adapter_that_beats_the_base_model(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    cache = REPO / ".loraops"
    if cache.is_dir():  # reuse the verified GGUF download if this checkout has it
        subprocess.run(["cp", "-r", str(cache), str(repo / ".loraops")], check=True)
    result = subprocess.run(loraops_cmd() + ["run"], cwd=repo, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    layout = Layout(repo)
    scores = read_json(layout.eval_metrics)["models"]
    assert scores["adapter"]["accuracy"] > scores["base"]["accuracy"] + 0.1, scores
    reg = read_json(layout.registration)
    mlflow.set_tracking_uri(layout.tracking_uri())
    served = mlflow.pyfunc.load_model(f"models:/{reg['model_name']}/{reg['version']}")
    answers = served.predict(["I forgot my password and cannot log in", "where is my package?"])
    assert len(answers) == 2 and all(isinstance(a, str) and a for a in answers), answers
