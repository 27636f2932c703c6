"""Every numbered notebook runs top to bottom headless at smoke scale, through the report runner."""

import json
from pathlib import Path

import pytest

from vitstudy.report import runner

NOTEBOOKS = [p.stem for p in runner.list_notebooks()]
SHARED = ("baselines", "multiexit")  # the smoke_cache folders that tests running at once may share


@pytest.fixture
def shared_smoke_cache(smoke_cache: Path, isolated_outputs: Path) -> Path:
    """This test's cache links the run's trained smoke baseline and feature recordings; the rest is its own."""
    cache = isolated_outputs / "cache"
    cache.mkdir()
    for name in SHARED:
        (smoke_cache / name).mkdir(exist_ok=True)
        (cache / name).symlink_to(smoke_cache / name, target_is_directory=True)
    return smoke_cache


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_at_smoke_scale(name, tmp_path, shared_smoke_cache):
    """The notebook executes without an exception (widget callbacks included) and writes its files."""
    baselines = sorted((shared_smoke_cache / "baselines").iterdir())
    manifest = runner.run_report("smoke", only=[name], out=tmp_path, log=lambda *a, **k: None)
    files = manifest["notebooks"][name]["files"]
    assert files and all(f.split("/")[-1].startswith(name[:3]) for f in files)
    assert all((tmp_path / f).is_file() for f in files)
    assert json.loads((tmp_path / runner.MANIFEST).read_text())["notebooks"][name]["scale"] == "smoke"
    # Only the baseline trained under the lock is shared: a notebook training another one there would race.
    assert sorted((shared_smoke_cache / "baselines").iterdir()) == baselines


def test_notebooks_are_numbered_and_start_at_00():
    """Notebooks are found, numbered from 00 without duplicates."""
    numbers = [n[:2] for n in NOTEBOOKS]
    assert numbers and numbers[0] == "00" and len(numbers) == len(set(numbers))
