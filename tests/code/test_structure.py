"""The DAG is declared once: dvc.yaml and the Prefect flow follow the library's stage order."""

import ast
import subprocess
import sys
from pathlib import Path

import yaml

from loraops.pipeline import PIPELINE, STAGES

REPO = Path(__file__).resolve().parents[2]


def test_dvc_stages_match_the_library_pipeline_in_order_and_call_the_cli():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert tuple(stages) == PIPELINE
    for name, stage in stages.items():
        assert stage["cmd"] == f"loraops stage {name}"


def test_each_dvc_stage_depends_on_the_outputs_of_an_earlier_stage():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    produced: set[str] = set()
    for name, stage in stages.items():
        # ${data.path}: the user's data file, the one input no stage produces (the ingest stage reads it).
        user_input = ["${data.path}"] if name == "ingest" else []
        assert all(d in stage.get("deps", []) for d in user_input), f"{name} must depend on {user_input}"
        data_deps = [d for d in stage.get("deps", []) if not d.startswith(("src/", "evals")) and d not in user_input]
        assert set(data_deps) <= produced, f"{name} depends on {set(data_deps) - produced} not produced before it"
        outs = stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", [])
        produced |= {o if isinstance(o, str) else next(iter(o)) for o in outs}


def test_prefect_flow_runs_the_library_pipeline_and_holds_no_step_logic():
    source = (REPO / "flows" / "pipeline.py").read_text()
    tree = ast.parse(source)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "loraops.pipeline"
                for a in n.names}
    assert {"PIPELINE", "run_stage"} <= imported
    loops = [n for n in ast.walk(tree) if isinstance(n, ast.For) and ast.unparse(n.iter) == "PIPELINE"]
    assert loops, "the flow must iterate over loraops.pipeline.PIPELINE"
    assert set(STAGES) == set(PIPELINE)


def test_library_imports_neither_prefect_nor_dvc():
    modules = sorted("loraops." + p.relative_to(REPO / "src" / "loraops").with_suffix("").as_posix().replace("/", ".")
                     for p in (REPO / "src" / "loraops").rglob("*.py") if p.name != "__init__.py")
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'dvc'))\n"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_unsafe_loading_in_library_code():
    for path in (REPO / "src" / "loraops").rglob("*.py"):
        text = path.read_text()
        assert "torch.load(" not in text and "pickle.load" not in text, path
        assert "trust_remote_code=True" not in text, path
