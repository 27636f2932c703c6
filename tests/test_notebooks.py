"""Every numbered notebook runs top to bottom headless at smoke scale, through the report runner."""

import json

import pytest

from vitstudy.report import runner

NOTEBOOKS = [p.stem for p in runner.list_notebooks()]
SHARED = ("baselines", "multiexit")  # the smoke_cache folders that tests running at once may share
# Seconds the longest smoke runs take on a 2-core machine: conftest starts the longest tests first (others: its
# default), so the workers finish together. A scheduling hint only: no test reads it.
SECONDS = {"08": 60, "04": 45, "02": 45, "11": 60}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.notebooks(seconds=SECONDS.get(name[:2], 30))) for name in NOTEBOOKS]
)
def test_notebook_runs_at_smoke_scale(name, tmp_path, smoke_cache, share_cache):
    """The notebook executes without an exception (widget callbacks included) and writes its files."""
    share_cache(smoke_cache, SHARED)
    baselines = sorted((smoke_cache / "baselines").iterdir())
    manifest = runner.run_report("smoke", only=[name], out=tmp_path, log=lambda *a, **k: None)
    files = manifest["notebooks"][name]["files"]
    assert files and all(f.split("/")[-1].startswith(name[:3]) for f in files)
    assert all((tmp_path / f).is_file() for f in files)
    assert json.loads((tmp_path / runner.MANIFEST).read_text())["notebooks"][name]["scale"] == "smoke"
    # Only the baseline trained under the lock is shared: a notebook training another one there would race.
    assert sorted((smoke_cache / "baselines").iterdir()) == baselines


def test_notebooks_are_numbered_and_start_at_00():
    """Notebooks are found, numbered from 00 without duplicates."""
    numbers = [n[:2] for n in NOTEBOOKS]
    assert numbers and numbers[0] == "00" and len(numbers) == len(set(numbers))
