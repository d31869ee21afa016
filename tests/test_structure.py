"""The shape of the package: no import cycles, small pipeline modules, an engine without Typer or Rich."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "caduceus_cli"
MAX_PIPELINE_LINES = 400
MAX_MODULE_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module):
    """Every import statement of a module, at its top level and inside functions and classes
    (a function-level import is a dependency all the same), except under ``if TYPE_CHECKING``."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            stack += node.orelse
        else:
            stack += list(ast.iter_child_nodes(node))


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``name`` imports, at once or inside a function, parent packages
    included (except its own parents, which are always imported before it)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target:
                if target in known and not name.startswith(target + ".") and target != name:
                    found.add(target)
                target = target.rpartition(".")[0]
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node], _ = 2, path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_in_the_package():
    mods = modules()
    graph = {name: imported_modules(name, path, set(mods)) for name, path in mods.items()}
    assert graph["caduceus_cli.pipelines.svm"] >= {"caduceus_cli.pipelines.svm_model"}  # the walk sees imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_pipeline_module_is_over_400_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in (PACKAGE / "pipelines").rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > MAX_PIPELINE_LINES} == {}


def test_no_module_outside_the_kernels_is_over_450_lines():
    kernels = PACKAGE / "model" / "kernels"
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
             if kernels not in p.parents}
    assert {k: v for k, v in sizes.items() if v > MAX_MODULE_LINES} == {}


def triton_modules() -> set[str]:
    """Modules that import Triton as they are imported: the GPU kernels, and nothing else."""
    found = set()
    for name, path in modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "triton" for a in node.names) or (
                    isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "triton"):
                found.add(name)
    return found


def test_only_gpu_kernel_modules_import_triton_at_import_time():
    found = triton_modules()
    assert "caduceus_cli.model.kernels.scan_triton" in found  # the walk sees them
    assert {m for m in found if not m.startswith("caduceus_cli.model.kernels.")} == set()


# Run in a fresh interpreter where importing Triton fails (as on a CPU-only install, where the CPU
# build of torch brings none) and every attempt is recorded.
_WITHOUT_TRITON = """
import importlib, importlib.abc, sys
attempts = []
class NoTriton(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "triton":
            attempts.append(name)
            raise ImportError("triton is not installed (blocked by the test)")
        return None
sys.meta_path.insert(0, NoTriton())
"""


def test_engine_never_imports_typer_rich_or_triton():
    """Every engine module (outside commands/ and cli.py, but the Triton kernels) imports without
    Typer, Rich or click, and a model loads and runs on the CPU without trying to import Triton."""
    skip = triton_modules() | {"caduceus_cli.cli", "caduceus_cli.__main__"}
    engine = [m for m in modules() if not m.startswith("caduceus_cli.commands") and m not in skip]
    code = (_WITHOUT_TRITON +
            f"for m in {engine!r}: importlib.import_module(m)\n"
            "import caduceus_cli\n"
            "model = caduceus_cli.load_model()\n"
            "out = model(caduceus_cli.tokenize(['ACGTNACGTTGCA' * 8]))\n"
            "assert out.logits.shape[1] == 104\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich', 'click'))\n"
            "print(bad, attempts); sys.exit(1 if bad or attempts else 0)")
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_command_line_starts_without_the_heavy_libraries():
    """Help, version and usage errors stay fast: defaults come from light settings modules."""
    code = ("import sys, caduceus_cli.cli\n"
            "heavy = [m for m in ('numpy', 'torch', 'pyarrow', 'pysam', 'cyvcf2') if m in sys.modules]\n"
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_name_of_the_python_api_resolves():
    """The lazy table of caduceus_cli keeps pointing at real objects after modules move."""
    import caduceus_cli

    missing = []
    for name in caduceus_cli._LAZY:
        try:
            getattr(caduceus_cli, name)
        except (ImportError, AttributeError) as e:
            missing.append(f"{name}: {e}")
    assert missing == []
