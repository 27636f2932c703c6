"""The package's shape: imports go one way (shared <- method cores <- experiments <- notebooks), no circles, no
intra-package import hidden inside a function, notebooks that never import the report runner, and the code as the
formatter writes it (``ruff check`` and ``ruff format --check`` clean)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vitstudy"
CORES = ("vitstudy.multiexit", "vitstudy.skipvit")
PACKING_PRAGMA = "# fmt" + ": skip"  # spelled in two pieces so that this file does not match itself


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(current: str, is_package: bool, level: int, target: str | None) -> str:
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, target] if target else base)


def imports(name: str) -> list[tuple[str, bool]]:
    """(imported vitstudy module, whether the import sits inside a function) for every import in ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names if a.name.startswith("vitstudy"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    target = _resolve(name, path.name == "__init__.py", child.level, child.module)
                else:
                    target = child.module or ""
                if not target.startswith("vitstudy"):
                    continue
                for alias in child.names:  # `from . import bench` imports a module; `from .x import f` a name
                    sub = f"{target}.{alias.name}"
                    found.append((sub if sub in MODULES else target, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def test_method_cores_never_import_experiments_or_the_runner():
    """multiexit and skipvit use only shared modules and themselves: never experiments, never the report runner."""
    bad = [
        (name, target)
        for name in MODULES
        if name.startswith(CORES)
        for target, _ in imports(name)
        if target.startswith(("vitstudy.experiments", "vitstudy.report"))
    ]
    assert not bad


def test_shared_modules_never_import_methods_or_experiments():
    """The shared mechanics (config, data, train, bench, plots, widgets, ...) sit below both methods."""
    upper = (*CORES, "vitstudy.experiments")
    shared = [n for n in MODULES if not n.startswith((*upper, "vitstudy.report", "vitstudy.__main__"))]
    bad = [(name, target) for name in shared for target, _ in imports(name) if target.startswith(upper)]
    assert not bad


def test_no_import_circle():
    """Following module-level imports from any module never leads back to it."""
    graph = {name: {t for t, in_function in imports(name) if not in_function and t != name} for name in MODULES}
    # A package's __init__ re-exporting its own submodules is not a circle; a submodule importing the package is.
    cycles = []

    def walk(node: str, stack: list[str], seen: set[str]) -> None:
        for target in graph.get(node, ()):
            if target in stack:
                cycle = stack[stack.index(target) :] + [target]
                if not all(c.startswith(cycle[0]) or cycle[0].startswith(c) for c in cycle):
                    cycles.append(cycle)
            elif target not in seen:
                seen.add(target)
                walk(target, [*stack, target], seen)

    for name in MODULES:
        walk(name, [name], {name})
    assert not cycles, cycles[:3]


def test_no_package_import_hidden_in_a_function():
    """A vitstudy import inside a function hides a dependency (or a circle); only the CLI imports lazily, so that
    ``--help`` and argument errors need no torch."""
    hidden = [
        (name, target)
        for name in MODULES
        if name != "vitstudy.__main__"
        for target, in_function in imports(name)
        if in_function
    ]
    assert not hidden


def test_notebooks_never_import_the_report_runner():
    """Notebooks write through ``vitstudy.report``'s outputs; the runner (papermill) is the report's business."""
    offenders = [p.name for p in (ROOT / "notebooks").glob("*.py") if "report.runner" in p.read_text()]
    assert not offenders


def _ruff() -> list[str]:
    """ruff from the environment that runs the tests (installed with the ``dev`` extra)."""
    beside = Path(sys.executable).with_name("ruff")
    found = str(beside) if beside.exists() else shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    return [found]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_code_is_as_ruff_writes_it(command):
    """The package, tests and notebooks pass ``ruff check`` and ``ruff format --check`` with the project's settings;
    no formatter pragma packs statements onto fewer lines."""
    result = subprocess.run(
        [*_ruff(), *command, "vitstudy", "tests", "notebooks"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    packed = [
        str(p.relative_to(ROOT))
        for d in ("vitstudy", "tests", "notebooks")
        for p in (ROOT / d).rglob("*.py")
        if PACKING_PRAGMA in p.read_text()
    ]
    assert not packed
