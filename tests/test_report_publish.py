"""What a report run may remove from its output folder: only the files it published for that notebook before."""

import json
import textwrap

from vitstudy.report import runner
from vitstudy.report.runner import MANIFEST, _publish

WRITES = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
import pandas as pd
from vitstudy import report
for name in {names}:
    report.save_table(pd.DataFrame({{"scale": [SCALE]}}), name)
"""


def _notebook(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "04_tables.py").write_text(textwrap.dedent(WRITES.format(names=names)))


def _quiet(*args, **kwargs):
    pass


def test_hand_made_files_survive_a_run(tmp_path):
    """Files the runner did not publish (a hand-run table named like the notebook's, a note) survive a run."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _notebook(notebooks, ["04_a"])
    hand_made = [out / "tables" / "04_aa_isolation_vit_small.csv", out / "04_hand_made_note.txt"]
    for path in hand_made:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("made by hand")
    runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    assert all(path.read_text() == "made by hand" for path in hand_made)
    assert (out / "tables" / "04_a.csv").is_file()


def test_file_the_previous_run_published_and_this_one_does_not_is_removed(tmp_path):
    """A table the last run of the notebook published, and this run no longer writes, is removed."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _notebook(notebooks, ["04_a", "04_b"])
    runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    _notebook(notebooks, ["04_a"])
    runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["04_a.csv", "04_a.md"]
    files = json.loads((out / MANIFEST).read_text())["notebooks"]["04_tables"]["files"]
    assert files == ["notebooks/04_tables.ipynb", "tables/04_a.csv", "tables/04_a.md"]


def test_a_manifest_entry_outside_the_folder_is_never_removed(tmp_path):
    """A recorded file that climbs out of the output folder (a damaged manifest) is left alone."""
    staging, out = tmp_path / "staging", tmp_path / "out"
    staging.mkdir()
    outside = tmp_path / "04_keep.csv"
    outside.write_text("keep")
    assert _publish(staging, out, prefix="04", previous=["../04_keep.csv"]) == []
    assert outside.read_text() == "keep"
