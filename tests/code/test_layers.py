"""The library's shape: the layers contract holds (import-linter), no module imports itself back through others
(imports inside functions count), and exactly one module deletes MLflow model versions."""

import ast
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "loraops"


def test_import_linter_layers_contract_is_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "loraops layers KEPT" in result.stdout


def import_cycles(graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), over every import grimp sees."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(module: str) -> None:
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


def test_no_import_cycles_among_library_modules():
    graph = grimp.build_graph("loraops", include_external_packages=False)
    assert import_cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_hidden_inside_a_function(tmp_path, monkeypatch):
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("import cyclic.b\n")
    (package / "b.py").write_text("def later():\n    import cyclic.a  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles(grimp.build_graph("cyclic")) == [["cyclic.a", "cyclic.b"]]


def test_exactly_one_module_deletes_model_versions():
    deleting = sorted(str(p.relative_to(REPO)) for p in [*SRC.rglob("*.py"), *(REPO / "flows").rglob("*.py")]
                      if "delete_model_version(" in p.read_text() or "delete_model_version," in p.read_text())
    assert deleting == ["src/loraops/registry/cleanup.py"]


def test_every_package_declares_its_public_api():
    for init in SRC.glob("*/__init__.py"):
        text = init.read_text()
        assert "__all__" in text, init
    top = ast.parse((SRC / "__init__.py").read_text())
    assert not [n for n in ast.walk(top) if isinstance(n, (ast.Import, ast.ImportFrom))]  # only its version
