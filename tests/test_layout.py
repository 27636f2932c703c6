"""The package's shape: imports go one way (shared <- method cores <- experiments <- measurements, tools), no
circles, no intra-package import hidden inside a function, notebooks that never import the report runner, and the
code as the formatter writes it (``ruff check`` and ``ruff format --check`` clean)."""

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


# Every module belongs to one room; a room imports only rooms of its own rank or lower (and, inside a rank, only
# what FORBIDDEN allows). Shared mechanics (config, data, train, bench, ...) sit at the bottom, the method cores above
# them and the report's machinery, the experiments above the cores, the hand-run measurements and tools above those.
RANKS = {
    "shared": 0,
    "bench": 0,
    "report": 1,
    "multiexit": 1,
    "skipvit": 1,
    "tome": 1,
    "experiments": 2,
    "experiments.multiexit": 3,
    "experiments.skipvit": 3,
    "measure": 4,
    "tools": 4,
    "__main__": 5,
}
FORBIDDEN = {
    ("multiexit", "report"),  # a core is the method only: it never writes the report
    ("skipvit", "report"),
    ("skipvit", "multiexit"),  # the composition of the two lives in multiexit, which builds on SkipViT
    ("tome", "report"),
    ("tome", "multiexit"),  # ToMe reuses SkipViT's block pieces (one way: SkipViT never builds on ToMe)
    ("skipvit", "tome"),
    ("experiments.multiexit", "experiments.skipvit"),  # what both methods' experiments share lives a level lower
    ("experiments.skipvit", "experiments.multiexit"),
}


def room(name: str) -> str:
    """The room of a module: its folder under vitstudy/ (experiments split by method), or "shared"."""
    parts = name.split(".")
    if len(parts) > 3 and parts[1] == "experiments" and parts[2] in ("multiexit", "skipvit"):
        return f"experiments.{parts[2]}"
    if len(parts) > 1 and parts[1] in RANKS:
        return parts[1]
    return "shared"


def test_every_folder_has_a_rank():
    """A new folder under vitstudy/ is placed in the layering before it is used."""
    folders = {p.parent.relative_to(PACKAGE).as_posix().replace("/", ".") for p in PACKAGE.rglob("__init__.py")}
    assert folders - {"."} <= set(RANKS)


def test_imports_go_one_way():
    """Every import goes to a room of the same or a lower rank; the cores never import the runner, SkipViT never
    imports multi-exit, and the two methods' experiments never import each other."""
    bad = [
        (name, target)
        for name in MODULES
        for target, _ in imports(name)
        if RANKS[room(target)] > RANKS[room(name)] or (room(name), room(target)) in FORBIDDEN
    ]
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
