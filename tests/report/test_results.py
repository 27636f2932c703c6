"""RESULTS.md: generated from the committed tables, current, torch-free; verdicts derived from the numbers, never
"within" under a failed A/A control; a folder without tables writes nothing."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pandas as pd

from vitstudy.__main__ import main
from vitstudy.reference import TABLES
from vitstudy.report import results
from vitstudy.verdicts import NOT_TRUSTWORTHY, WITHIN_TARGET, table_trust

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


def timed_5_1(control: tuple[float, float, float]) -> dict[str, list]:
    """Table 5.1 with its baseline, one forced exit at its FLOP ideal, and an A/A control reading ``control``; the
    stored verdicts claim "within target" whatever the numbers say."""
    speedup, low, high = control
    return {
        "setting": ["original (all blocks)", "forced exit after block 3", "A/A control: plain vs its copy"],
        "exit_block": [12, 3, None],
        "speedup": [1.0, 3.9, speedup],
        "speedup_low": [1.0, 3.85, low],
        "speedup_high": [1.0, 3.95, high],
        "ideal_speedup": [1.0, 3.9, 1.0],
        "verdict": ["baseline", "within target (0.97–1.03)", "A/A control: within 1.00 ± 3%"],
        "paper_speed_improvement": [1.0, 3.83, None],
        "note": ["", "", ""],
    }


def exit_row(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("| forced exit after block 3"))


def test_speed_verdict_is_derived_from_the_numbers(tmp_path):
    """A passing control: the verdict reads measured ÷ ideal from the speed-up and its ideal, not the stored text."""
    small_report(tmp_path, timed_5_1((1.0, 0.99, 1.01)))
    row = exit_row(results.render(tmp_path))
    assert "1.00 (0.99–1.01): within target (0.97–1.03, interval inside 0.95–1.05)" in row


def test_failed_control_reads_not_trustworthy_never_within(tmp_path):
    """A control whose interval leaves 1.00 ± 3% (its point inside): every speed verdict of the table, in its section
    and in the findings, reads "not trustworthy", never "within"; the section carries the caveat."""
    small_report(tmp_path, timed_5_1((1.0, 0.98, 1.05)))
    text = results.render(tmp_path)
    assert NOT_TRUSTWORTHY in exit_row(text) and "within" not in exit_row(text)
    finding = next(line for line in text.splitlines() if line.startswith("| 5.1: forced exit after block 3"))
    assert "not trustworthy (A/A 1.00× (0.98–1.05), outside 1.00 ± 3%)" in finding and "within" not in finding
    assert "- Caveat: speed-up: not trustworthy (A/A 1.00× (0.98–1.05)" in text


def test_notes_travel_with_their_numbers(tmp_path):
    """Each distinct note of a table is a caveat below that table's rows."""
    columns = timed_5_1((1.0, 0.99, 1.01)) | {"note": ["machine disturbed", "machine disturbed", ""]}
    small_report(tmp_path, columns)
    assert results.render(tmp_path).count("- Caveat: machine disturbed") == 1


def test_machine_line_says_not_recorded_where_the_run_did_not_record(tmp_path):
    """CPU capability and bf16 kernels come from the manifest; absent there, "not recorded"."""
    small_report(tmp_path, table_5_1("paper_speed_improvement"))
    assert "CPU capability not recorded; bf16 kernels not recorded" in results.run_line(tmp_path, TABLE_5_1)
    env = {"device_name": "EPYC 9R14", "device_type": "cpu", "cpu_threads": 2, "cpu_capability": "AVX512"}
    assert results.machine(env | {"bf16_native": True}).endswith("CPU capability AVX512; bf16 kernels yes)")
    # Two machines under one CPU name differ by the peaks they measured; bf16 arms in the table mean bf16 kernels.
    peaks = [{"dtype": "fp32", "gflop_per_s": 236.4}, {"dtype": "bf16", "gflop_per_s": 972.5}]
    line = results.machine({"device_name": "AMD EPYC", "machine_peak": peaks}, bf16_timed=True)
    assert "bf16 kernels yes (its bf16 arms were timed); matmul peak fp32 236 / bf16 972 GFLOP/s" in line


def test_results_without_tables_exits_nonzero_writes_nothing(tmp_path, capsys):
    """`results --figures` on a folder without tables exits non-zero with one line and writes nothing (no
    "not run yet" RESULTS.md, no figure); `--check` too."""
    empty, output = tmp_path / "figures", tmp_path / "RESULTS.md"
    empty.mkdir()
    assert main(["results", "--figures", str(empty), "--output", str(output)]) != 0
    assert main(["results", "--figures", str(empty), "--output", str(output), "--check"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and str(empty) in err[0]
    assert not output.exists() and not list(empty.iterdir())


def test_results_writes_the_findings_figure(tmp_path):
    """`results` writes the findings figure beside the tables and RESULTS.md links it."""
    small_report(tmp_path / "figures", timed_5_1((1.0, 0.99, 1.01)))
    exits = pd.DataFrame(
        {
            "setting": ["same/3/sample"],
            "variant": ["same"],
            "policy": ["sample"],
            "top1": [80.0],
            "speedup": [1.2],
            "speedup_low": [1.1],
            "speedup_high": [1.3],
            "ideal_speedup": [1.25],
        }
    )
    exits.to_csv(tmp_path / "figures" / "tables" / "02_table_5_2.csv", index=False)
    output = results.write_results(tmp_path / "figures", tmp_path / "RESULTS.md")
    assert {p.name for p in (tmp_path / "figures").glob("results_findings.*")} == {
        "results_findings.png",
        "results_findings.svg",
    }
    assert "](figures/results_findings.png)" in output.read_text()


def committed_sections():
    """(section, its frame, its text in the committed RESULTS.md) for every section with timed speed-ups."""
    text = results.results_path().read_text()
    figures = results.project_root() / "figures"
    for section in results.SECTIONS:
        frame = results.read_table(figures, section)
        if frame is None or not section.speeds:
            continue
        start = text.index(f"### {section.title}\n")
        end = text.find("\n#", start + 1)
        yield section, frame, text[start : end if end > 0 else None]


def test_committed_results_carry_not_trustworthy_for_each_failed_control():
    """Every committed table whose A/A control fails by its interval says "not trustworthy" in its section."""
    failed = []
    for section, frame, body in committed_sections():
        for speed in section.speeds:
            if speed.control is None and any(
                table_trust(group, speed.prefix).startswith(NOT_TRUSTWORTHY)
                for group in results._groups(frame, section.groups)
            ):
                failed.append(section.title)
                assert f"{speed.label}" in body and NOT_TRUSTWORTHY in body, section.title
    assert failed  # the committed tables do hold failed controls: the test reads them


def test_committed_results_call_nothing_within_under_a_failed_control():
    """No row of the committed RESULTS.md whose every speed-up sits under a failed A/A control reads "within", and no
    finding judged under a failed control does."""
    for section, frame, body in committed_sections():
        trusts = [results.trust_by_row(frame, speed, section.groups) for speed in section.speeds]
        lines = results.section_table(frame, section)[2:]
        for (index, _), line in zip(frame.iterrows(), lines, strict=True):
            if all(trust[index] for trust in trusts):
                assert WITHIN_TARGET not in line and line in body, line
    findings = results.findings(results.project_root() / "figures")
    under_failed = [f for f in findings if f.on_speed and f.trust.startswith(NOT_TRUSTWORTHY)]
    assert under_failed and all(f.verdict == f.trust for f in under_failed)


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
    """`results` reads the tables with pandas (and draws with matplotlib) only: torch is never imported. It runs on a
    copy of the committed tables, so the figure it writes lands in the temporary folder."""
    committed = results.project_root() / "figures"
    figures = tmp_path / "figures"
    shutil.copytree(committed / "tables", figures / "tables", ignore=shutil.ignore_patterns("raw", "profiles"))
    shutil.copy(committed / "manifest.json", figures / "manifest.json")
    args = ["results", "--figures", str(figures), "--output", str(tmp_path / "RESULTS.md")]
    code = f"import sys; from vitstudy.__main__ import main; main({args!r}); print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.stdout.strip().splitlines()[-1] == "False", completed.stdout + completed.stderr
