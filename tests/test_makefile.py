"""`make report`'s set-up prints no warning: pip runs with -qq (errors only, so a failed install still prints pip's
error and stops make) and the editable install is a .pth file, for which setuptools has nothing to warn about."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _recipe(target: str) -> list[str]:
    """The recipe lines of ``target`` in the Makefile, tab removed."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:])
    return recipe


def test_install_runs_pip_with_errors_only():
    """Every pip call of the set-up has -qq: a warning about a user's own pip configuration (an extra index that is
    not there) is not this project's to print."""
    pip_lines = [line for line in _recipe("$(VENV)/.installed") if " -m pip install" in line]
    assert len(pip_lines) == 2 and all(re.search(r"\s-qq(\s|$)", line) for line in pip_lines), pip_lines


def test_set_up_echoes_one_line_and_no_commands():
    """The set-up says what it does once, not each command it runs (a newcomer reads the console, not make)."""
    recipe = _recipe("$(VENV)/.installed")
    assert all(line.startswith("@") for line in recipe)
    assert [line for line in recipe if line.startswith("@echo")] == [recipe[0]]
    assert _recipe("report") == ["@$(PY) -m vitstudy report --scale $(SCALE)"]


def test_editable_install_is_a_path_file():
    """The checkout's own folder is the package root (package-dir ""="."): setuptools then writes a .pth file, which
    picks up edits and new modules and prints nothing; with its default finder it prints a BuildBackendWarning."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"": "."}
    assert setuptools["packages"]["find"]["include"] == ["vitstudy*"]
