import json

import pandas as pd
import pytest

from vitstudy.measure import report_time
from vitstudy.report.cell_outputs import changed, rows_within_target, snapshot, tables_within_target

ENV = {"device_name": "AMD EPYC", "cpu_capability": "AVX2", "cpu_threads": 2, "torch": "2.15.0"}


def _cell(seconds, wrote=(), cache=0, name="cell 1/1"):
    return {"cell": name, "seconds": seconds, "first_line": "x = 1", "wrote": list(wrote), "cache_files": cache}


def _manifest(date="2026-12-06T10:00:00+00:00", met=None):
    cells = [
        _cell(300.0, ["tables/raw/04_speed.csv"]),
        _cell(50.0, ["tables/10_latency.csv", "tables/raw/10_latency.csv"]),
        _cell(400.0, ["tables/05_runs.csv"], cache=4),
        _cell(20.0, ["05_plot.png", "tables/04_speed.csv"]),
    ]
    entry = {
        "seconds": 790.0,
        "date": date,
        "environment": ENV,
        "cells": cells,
        "within_target_rows": {"04_speed": 3} if met is None else met,
    }
    return {"scale": "quick", "notebooks": {"04_x": entry}}


def _verdicts(folder, name, verdicts):
    (folder / "tables").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"verdict": verdicts}).to_csv(folder / "tables" / f"{name}.csv", index=False)


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
    _verdicts(tmp_path, "01_a", ["within target (0.9–1.03)", "A/A control: within 1.00 ± 3%", "baseline"])
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "tables" / "01_b.csv")
    assert rows_within_target(tmp_path / "tables" / "01_b.csv") == 0
    assert tables_within_target(tmp_path) == {"01_a": 1}


def test_a_timed_cell_is_behind_a_met_target_when_the_table_it_timed_meets_one():
    """The kind follows the raw times a cell saved, not the cell that saved the table; cache files mean training."""
    cells = report_time.cell_table(_manifest())
    assert cells["kind"].tolist() == [
        report_time.MET_TIMING,
        report_time.OTHER_TIMING,
        report_time.TRAINING,
        report_time.REST,
        report_time.STARTUP,
    ]
    assert cells["meets_target_in"].iloc[0] == "04_speed: this run" and cells["seconds"].iloc[-1] == 20.0


def test_a_table_that_meets_its_target_in_the_committed_report_counts_too(tmp_path):
    """A table within target in the committed report keeps its timing even where this run missed the target."""
    _verdicts(tmp_path, "10_latency", ["baseline", "within target (0.9–1.03)"])
    met = report_time.met_tables(_manifest(met={}), committed=tmp_path)
    assert met == {"10_latency": "committed report"}
    cells = report_time.cell_table(_manifest(met={}), met)
    assert cells["kind"].tolist()[:2] == [report_time.OTHER_TIMING, report_time.MET_TIMING]


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
