import json

import pandas as pd
import pytest

from vitstudy.experiments import report_time
from vitstudy.report.cell_outputs import changed, rows_within_target, snapshot

ENV = {"device_name": "AMD EPYC", "cpu_capability": "AVX2", "cpu_threads": 2, "torch": "2.15.0"}


def _cell(seconds, wrote=(), within=0, cache=0, name="cell 1/1"):
    return {"cell": name, "seconds": seconds, "first_line": "x = 1", "wrote": list(wrote),
            "within_target_rows": within, "cache_files": cache}  # fmt: skip


def _manifest(date="2026-12-06T10:00:00+00:00"):
    cells = [
        _cell(300.0, ["tables/04_speed.csv", "tables/raw/04_speed.csv"], within=3),
        _cell(50.0, ["tables/10_latency.csv", "tables/raw/10_latency.csv"], within=0),
        _cell(400.0, ["tables/05_runs.csv"], cache=4),
        _cell(20.0, ["05_plot.png"]),
    ]
    return {"scale": "quick", "notebooks": {"04_x": {"seconds": 790.0, "date": date, "environment": ENV,
                                                      "cells": cells}}}  # fmt: skip


def test_snapshot_and_changed_find_new_and_rewritten_files(tmp_path):
    """changed() lists files that are new or rewritten between two snapshots; skipped folders are not looked at."""
    (tmp_path / "old.txt").write_text("a")
    (tmp_path / "processes").mkdir()
    before = snapshot(tmp_path, skip=("processes",))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "new.txt").write_text("b")
    (tmp_path / "processes" / "1.pid").write_text("")
    assert changed(before, snapshot(tmp_path, skip=("processes",))) == ["sub/new.txt"]


def test_rows_within_target_counts_verdicts_and_ignores_tables_without_them(tmp_path):
    """Only verdicts that start with "within target" count; a table with no verdict column counts 0."""
    pd.DataFrame({"verdict": ["within target (0.9–1.03)", "A/A control: within 1.00 ± 3%"]}).to_csv(tmp_path / "a.csv")
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "b.csv")
    assert rows_within_target(tmp_path / "a.csv") == 1 and rows_within_target(tmp_path / "b.csv") == 0


def test_cells_are_sorted_into_kinds_by_what_they_wrote():
    """Raw times with a met target, raw times without, cache files, the rest; startup is the notebook's remainder."""
    cells = report_time.cell_table(_manifest())
    assert cells["kind"].tolist() == [report_time.MET_TIMING, report_time.OTHER_TIMING, report_time.TRAINING,
                                      report_time.REST, report_time.STARTUP]  # fmt: skip
    assert cells["seconds"].iloc[-1] == 20.0


def test_time_budget_says_what_the_goal_leaves_once_met_timing_stays():
    """The goal minus the met-target timing is what every other kind must fit into."""
    budget = report_time.time_budget(report_time.cell_table(_manifest()), goal_s=600)
    by_kind = budget.set_index("kind")
    assert by_kind.loc[report_time.MET_TIMING, "seconds"] == 300.0
    assert by_kind.loc[report_time.MET_TIMING, "share_of_goal_pct"] == 50.0
    assert budget["left_for_the_rest_s"].iloc[0] == 300.0 and budget["rest_s"].iloc[0] == 490.0
    text = report_time.findings(budget, "a machine")
    assert "took 13.2 min against a goal of 10" in text and "from 8.2 to 5.0 min" in text


def test_a_manifest_without_cell_outputs_is_named():
    """A manifest from before cells recorded their outputs is refused with one line naming the notebook."""
    manifest = _manifest()
    del manifest["notebooks"]["04_x"]["cells"][0]["wrote"]
    with pytest.raises(ValueError, match="manifest='04_x' is not allowed"):
        report_time.cell_table(manifest)


def test_measure_reads_the_newest_recorded_manifest(tmp_path, monkeypatch):
    """measure() takes the latest run among the manifests that record cell outputs and writes both tables."""
    logs = tmp_path / "figures" / "logs"
    logs.mkdir(parents=True)
    (logs / "a_manifest.json").write_text(json.dumps(_manifest("2026-12-05T10:00:00+00:00")))
    (logs / "b_manifest.json").write_text(json.dumps(_manifest("2026-12-06T10:00:00+00:00")))
    old = _manifest("2026-12-07T10:00:00+00:00")
    del old["notebooks"]["04_x"]["cells"][0]["wrote"]
    (logs / "c_manifest.json").write_text(json.dumps(old))
    monkeypatch.setattr(report_time, "project_root", lambda: tmp_path)
    report_time.measure()
    budget = pd.read_csv(tmp_path / "figures" / "tables" / "19_quick_report_time.csv")
    assert set(budget["manifest"]) == {"b_manifest.json"} and budget["machine"].iloc[0].startswith("AMD EPYC (AVX2")
    assert (tmp_path / "figures" / "tables" / "19_quick_report_cells.md").is_file()
