"""What a report run may remove from its output folder: only the files it published for that notebook before. The
rules are the runner's publishing step (:func:`runner._publish`) and its pure parts, tested without a kernel."""

from vitstudy.report.runner import _publish, is_published, stale_files


def _staging(folder, names):
    """A notebook's staging folder as a run leaves it: each of ``names`` (paths under it) written."""
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"made by the run: {name}")
    return folder


def test_only_the_notebooks_numbered_files_are_published():
    """A file is published when it carries the notebook's number; an executed notebook only from notebooks/."""
    assert is_published("", "04_line.png", "04") and is_published("tables/raw", "04_speed.csv", "04")
    assert is_published("notebooks", "04_tables.ipynb", "04")
    assert not is_published("", "05_line.png", "04") and not is_published("tables", "04.csv", "04")
    assert not is_published("", "04_tables.ipynb", "04") and not is_published("notebooks", "04_notes.txt", "04")


def test_hand_made_files_survive_a_run(tmp_path):
    """Files the runner did not publish (a hand-run table named like the notebook's, a note) survive a run."""
    staging, out = _staging(tmp_path / "staging", ["tables/04_a.csv"]), tmp_path / "out"
    hand_made = [out / "tables" / "04_aa_isolation_vit_small.csv", out / "04_hand_made_note.txt"]
    for path in hand_made:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("made by hand")
    assert _publish(staging, out, prefix="04", previous=["tables/04_a.csv"]) == ["tables/04_a.csv"]
    assert all(path.read_text() == "made by hand" for path in hand_made)
    assert (out / "tables" / "04_a.csv").read_text() == "made by the run: tables/04_a.csv"


def test_file_the_previous_run_published_and_this_one_does_not_is_removed(tmp_path):
    """A table the last run of the notebook published, and this run no longer writes, is removed."""
    out = tmp_path / "out"
    first = ["notebooks/04_tables.ipynb", "tables/04_a.csv", "tables/04_b.csv", "05_other.png"]
    published = _publish(_staging(tmp_path / "first", first), out, prefix="04")
    assert published == ["notebooks/04_tables.ipynb", "tables/04_a.csv", "tables/04_b.csv"]
    second = _publish(_staging(tmp_path / "second", first[:2]), out, prefix="04", previous=published)
    assert second == ["notebooks/04_tables.ipynb", "tables/04_a.csv"]
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["04_a.csv"]


def test_a_manifest_entry_outside_the_folder_is_never_removed(tmp_path):
    """A recorded file that climbs out of the output folder (a damaged manifest) is left alone."""
    assert stale_files(["../04_keep.csv", "/etc/04_keep.csv", "tables/04_b.csv", "04_a.png"], ["04_a.png"]) == [
        "tables/04_b.csv"
    ]
    staging, out = tmp_path / "staging", tmp_path / "out"
    staging.mkdir()
    outside = tmp_path / "04_keep.csv"
    outside.write_text("keep")
    assert _publish(staging, out, prefix="04", previous=["../04_keep.csv"]) == []
    assert outside.read_text() == "keep"
