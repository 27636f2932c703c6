"""The install files agree with each other: environment.yml (checked offline, conda is not here) and pyproject."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins() -> dict[str, str]:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", d).groups() for d in dependencies if "==" in d)


def _environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def test_environment_yml_uses_pip_through_conda():
    """pip is a conda dependency, so the pip: section can run."""
    dependencies = _environment()["dependencies"]
    assert "pip" in dependencies and any(isinstance(d, dict) and "pip" in d for d in dependencies)


def test_environment_yml_pins_what_pyproject_pins():
    """torch, torchvision and timm carry the same versions in both files, and match what is installed."""
    from importlib.metadata import version

    pip_section = next(d["pip"] for d in _environment()["dependencies"] if isinstance(d, dict))
    environment_pins = dict(p.split("==") for p in pip_section if "==" in p)
    assert environment_pins == {k: v for k, v in _pins().items() if k in ("torch", "torchvision", "timm")}
    for name, pinned in environment_pins.items():
        assert version(name).split("+")[0] == pinned


@pytest.mark.slow
def test_environment_yml_pip_list_resolves(tmp_path):
    """`pip install --dry-run` of environment.yml's pip list resolves against the registry."""
    pip_section = next(d["pip"] for d in _environment()["dependencies"] if isinstance(d, dict))
    # conda writes the pip: list to a requirements file and runs pip from environment.yml's folder
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(pip_section) + "\n")
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "-r", str(requirements)]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_license_is_an_spdx_expression_the_build_backend_accepts():
    """``project.license`` is the SPDX string (PEP 639), not the deprecated table, and the build requirement asks for
    a setuptools that reads it (77 or later)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"
    setuptools = next(r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools"))
    assert int(re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools).group(1)) >= 77
