"""RESULTS.md: generated from the committed tables, current, torch-free."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd

from vitstudy.__main__ import main
from vitstudy.reference import TABLES
from vitstudy.report import results

TABLE_5_1 = "tables/01_max_speed_exit.csv"


def small_report(folder, columns: dict[str, list]) -> None:
    """A figures/ folder holding one Table 5.1 CSV and the manifest entry that names it."""
    (folder / "tables").mkdir(parents=True)
    pd.DataFrame(columns).to_csv(folder / TABLE_5_1, index=False)
    environment = {"device_name": "Test CPU", "device_type": "cpu", "cpu_threads": 2, "torch": "9.9"}
    entry = {"date": "2030-01-02T03:04:05+00:00", "scale": "smoke", "files": [TABLE_5_1], "environment": environment}
    (folder / "manifest.json").write_text(json.dumps({"notebooks": {"01_max_speed_exit": entry}}))


def table_5_1(paper_column: str, speedup: float = 3.5) -> dict[str, list]:
    return {
        "setting": ["exit 3"],
        "speedup": [speedup],
        "speedup_low": [3.4],
        "speedup_high": [3.9],
        "verdict": ["within target (0.97–1.03)"],
        paper_column: [3.83],
    }


def test_committed_results_md_is_current():
    """RESULTS.md equals a regeneration from the committed figures/ (run `python -m vitstudy results`)."""
    assert results.is_current(), "RESULTS.md is stale: run python -m vitstudy results"


def test_nan_renders_not_measured(tmp_path):
    """A measured value that is NaN reads "not measured", never "nan"."""
    small_report(tmp_path, table_5_1("paper_speed_improvement", speedup=math.nan))
    row = next(line for line in results.render(tmp_path).splitlines() if line.startswith("| exit 3"))
    assert "not measured" in row and "nan" not in row


def test_paper_number_shows_beside_ours(tmp_path):
    """A table's `paper_*` column is the paper's cell, ours with its interval beside it."""
    small_report(tmp_path, table_5_1("paper_speed_improvement"))
    assert "| exit 3 | 3.83× | 3.50× (3.40–3.90) |" in results.render(tmp_path)


def test_run_line_names_notebook_machine_and_date(tmp_path):
    """Each table's section says which notebook wrote it, on what machine and when, from the manifest."""
    small_report(tmp_path, table_5_1("paper_speed_improvement"))
    line = results.run_line(tmp_path, TABLE_5_1)
    assert all(part in line for part in ("01_max_speed_exit", "2030-01-02", "Test CPU", "2 threads", "torch 9.9"))


def test_every_reference_table_has_a_section():
    """Every numbered table of both documents (data/reference) is answered by a section."""
    assert set(TABLES) <= {s.reference for s in results.SECTIONS}


def test_check_on_a_stale_file_exits_1_with_one_line(tmp_path, capsys):
    """`results --check` on a file that differs from a regeneration exits 1 and says so in one line."""
    small_report(tmp_path / "figures", table_5_1("paper_speed_improvement"))
    stale = tmp_path / "RESULTS.md"
    stale.write_text("# Results\n\nhand-typed\n")
    args = ["results", "--figures", str(tmp_path / "figures"), "--output", str(stale)]
    assert main([*args, "--check"]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(args) == 0 and main([*args, "--check"]) == 0


def test_results_command_loads_no_torch(tmp_path):
    """`results` reads the tables with pandas only: torch is never imported."""
    args = ["results", "--output", str(tmp_path / "RESULTS.md")]
    code = f"import sys; from vitstudy.__main__ import main; main({args!r}); print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.stdout.strip().splitlines()[-1] == "False", completed.stdout + completed.stderr
