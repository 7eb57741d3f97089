"""dvc.yaml's code dependencies cannot drift: each stage depends on every package its stage function imports,
directly or not (imports inside functions count, and importing a module runs its packages' __init__), and on
evals/ when the metric modules are loaded."""

from pathlib import Path

import grimp
import pytest
import yaml

from loraops.pipeline import STAGES

REPO = Path(__file__).resolve().parents[2]
GRAPH = grimp.build_graph("loraops", include_external_packages=False)
# Loaded by path from evals/ (never imported), so the graph cannot see them: a module that loads metrics.
LOADS_EVALS = "loraops.evaluation.metrics"


def import_closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        parts = current.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        todo += GRAPH.find_modules_directly_imported_by(current)
    return seen


def source_of(module: str) -> str:
    path = REPO / "src" / Path(*module.split("."))
    return (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).relative_to(REPO).as_posix()


def uncovered(stage: str, deps: list[str]) -> list[str]:
    """Code the stage imports (or loads) that none of ``deps`` covers."""
    closure = import_closure(STAGES[stage].__module__) - {"loraops"}  # the top package holds only its version
    needed = [source_of(m) for m in sorted(closure)] + (["evals/"] if LOADS_EVALS in closure else [])
    folders = [d.rstrip("/") + "/" for d in deps]
    return [path for path in needed if not any(path.startswith(folder) for folder in folders)]


def code_deps() -> dict[str, list[str]]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: [d for d in stage.get("deps", []) if d.startswith(("src/", "evals"))]
            for name, stage in stages.items()}


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_depends_on_its_whole_import_closure(stage):
    deps = code_deps()[stage]
    assert uncovered(stage, deps) == []
    assert all(not d.endswith(".py") for d in deps), f"{stage}: code deps are package folders, not files"


def test_narrowing_a_stage_deps_is_caught():
    deps = code_deps()
    assert uncovered("train", [d for d in deps["train"] if d != "src/loraops/data"]) == \
        ["src/loraops/data/__init__.py", "src/loraops/data/answers.py", "src/loraops/data/demo.py", "src/loraops/data/ingest.py",
         "src/loraops/data/prompts.py", "src/loraops/data/splits.py"]
    assert uncovered("evaluate", [d for d in deps["evaluate"] if d != "evals"]) == ["evals/"]
    assert "src/loraops/core/hashing.py" in uncovered("register", [d for d in deps["register"]
                                                                   if d != "src/loraops/core"])
