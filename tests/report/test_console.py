"""What `python -m vitstudy report` prints: one line per notebook and the result, nothing that reads as a fault; the
rest in the run's log file, which the last line names. Three tests run the command on tiny notebooks in a real
kernel (the console is what a kernel, papermill and the runner print together); the others test the console's
pieces directly."""

import io
import logging
import re
import textwrap
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest
from papermill.translators import PythonTranslator

from vitstudy.__main__ import main
from vitstudy.progress import MARK
from vitstudy.report import runner
from vitstudy.report.console import ReportConsole, clock, notebook_line
from vitstudy.report.execute import CellProgress
from vitstudy.report.published import INJECTED_PARAMETERS
from vitstudy.verdicts import NOT_TRUSTWORTHY

# A parameter line papermill cannot read (a second "="): papermill warns about it, and the warning must reach the
# log, not the console. A progress line, a printed line and a Python warning: only the progress line is forwarded.
# What the kernel process and a process it starts write past the notebook (a library's warning written by C code,
# a worker's print) goes to the log too.
TRAINS = """
# %% tags=["parameters"]
import os
SCALE = "quick"
TRAIN = os.environ.get("VITSTUDY_TRAIN", "1") != "0"
# %%
import subprocess
import sys
import warnings
import pandas as pd
from vitstudy import progress, report
print("printed into the executed notebook")
warnings.warn("a warning a cell raises stays in the executed notebook")
os.write(2, b"W1207 cpp_extension.py:183] a warning written to the kernel's stderr\\n")
subprocess.run([sys.executable, "-c", "print('a worker prints')"], check=True)
progress.emit("epoch 1/1 done: 99.0 im/s")
# %%
report.save_table(pd.DataFrame({"scale": [SCALE]}), "{n}_scale")
"""

FAILS = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
x = 1
# %%
1 / 0
"""

DIES = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
import os
os._exit(3)
"""

FAULT = re.compile(r"warn|error|traceback|exception", re.IGNORECASE)


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    """``notebooks(**{name: source})``: the command's notebooks folder holds just these."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    monkeypatch.setattr(runner, "notebooks_dir", lambda: folder)

    def write(**sources):
        for name, source in sources.items():
            (folder / f"{name}.py").write_text(textwrap.dedent(source).replace("{n}", name[:2]))

    return write


def _log_named_by(line):
    """The text of the log file whose path ends ``line`` (relative to the working folder, or absolute)."""
    return Path(line.rsplit(": ", 1)[1]).read_text()


def test_report_console_is_one_line_per_notebook_and_the_result(tmp_path, notebooks, capfd):
    """A smoke report of two notebooks prints, on stdout and stderr together, one line per notebook, the result and
    the log's path: no line that reads as a warning, an error or a traceback, and no live line (not a terminal).
    The log holds each cell's line, the forwarded progress line and papermill's warning."""
    notebooks(**{"00_first": TRAINS, "01_second": TRAINS})
    out = tmp_path / "out"
    assert main(["report", "--scale", "smoke", "--out", str(out)]) == 0
    captured = capfd.readouterr()
    lines = (captured.out + captured.err).splitlines()
    assert [line for line in lines if FAULT.search(line)] == []
    assert "\r" not in captured.out
    assert len(lines) == 4, lines
    assert re.fullmatch(r"\[1/2\] 00_first: \d+\.\d s, 0 figures, 1 table", lines[0])
    assert re.fullmatch(r"\[2/2\] 01_second: \d+\.\d s, 0 figures, 1 table", lines[1])
    assert lines[2].startswith("report done: 2 notebooks, scale smoke, 0:") and f"{out}/" in lines[2]
    assert "RESULTS.md left as it is" in lines[2]
    assert lines[3].startswith("log (each cell's seconds, the training progress): ")
    log = _log_named_by(lines[3])
    assert "    00_first | cell 1/3 " in log and "    01_second | cell 3/3 " in log
    assert "    00_first | epoch 1/1 done: 99.0 im/s" in log
    assert "    00_first | papermill warning: Unable to parse line" in log
    assert "    00_first | kernel: W1207 cpp_extension.py:183] a warning written to the kernel's stderr" in log
    assert "    01_second | kernel: a worker prints" in log
    assert lines[0] in log and lines[2] in log and "printed into" not in log


def test_verbose_prints_each_cell_too(tmp_path, notebooks, capfd):
    """--verbose brings each cell's line and the progress lines back to the console."""
    notebooks(**{"00_first": TRAINS})
    assert main(["report", "--scale", "smoke", "--out", str(tmp_path / "out"), "--verbose"]) == 0
    printed = capfd.readouterr().out
    assert "    00_first | cell 2/3 " in printed and "    00_first | epoch 1/1 done: 99.0 im/s" in printed
    assert printed.splitlines()[-3].startswith("[1/1] 00_first: ")


def test_failing_notebook_is_one_loud_line(tmp_path, notebooks, capfd):
    """A failing cell: exit status 1 and one line on stderr naming the notebook, the cell, the error, the executed
    copy and the log (which ends with the same failure)."""
    notebooks(**{"00_fails": FAILS})
    assert main(["report", "--scale", "smoke", "--out", str(tmp_path / "out")]) == 1
    captured = capfd.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("report failed: notebook 00_fails.py failed in cell ") and "ZeroDivisionError" in line
    assert "executed copy: " in line
    log = _log_named_by(line)
    assert log.splitlines()[-1].startswith("report failed: notebook 00_fails.py failed in cell ")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_dead_kernel_is_one_loud_line(tmp_path, notebooks, capfd):
    """A kernel that dies (a crash, out of memory) fails the run in one line naming the notebook and the log, not
    a traceback."""
    notebooks(**{"00_dies": DIES})
    assert main(["report", "--scale", "smoke", "--out", str(tmp_path / "out")]) == 1
    captured = capfd.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith("report failed: notebook 00_dies.py: its kernel died (a crash, or out of memory)")
    assert captured.out == "" and "    00_dies | cell 2/2 " not in _log_named_by(line)


def test_live_line_only_on_a_terminal(tmp_path):
    """On a terminal, status() rewrites one line in place with a carriage return (spaces over a longer previous
    one), its clock moved on at each tick, erased before the next printed line; elsewhere, or with --verbose, it
    writes nothing."""
    stream, log = Terminal(), tmp_path / "run.log"
    console = ReportConsole(log, stream, tick_seconds=None)
    console.now = lambda: 103.0  # a fake clock: the notebook started at 100.0
    console.status("[1/2] 00_first", "cell 2/3: import os", 100.0)
    console.status("[1/2] 00_first", "cell 3/3", 100.0)
    longer, shorter = "[1/2] 00_first 0:03 · cell 2/3: import os", "[1/2] 00_first 0:03 · cell 3/3"
    assert stream.getvalue() == f"\r{longer}\r{shorter}" + " " * (len(longer) - len(shorter))
    stream.seek(0), stream.truncate()
    console.now = lambda: 165.0
    console.tick()
    assert stream.getvalue() == "\r[1/2] 00_first 1:05 · cell 3/3"
    stream.seek(0), stream.truncate()
    console.say("[1/2] 00_first: 65.0 s, 0 figures, 1 table")
    console.tick()  # nothing to redraw once a printed line erased it
    assert stream.getvalue() == "\r" + " " * len(shorter) + "\r[1/2] 00_first: 65.0 s, 0 figures, 1 table\n"
    console.close()
    for quiet in (ReportConsole(log, io.StringIO()), ReportConsole(log, Terminal(), verbose=True)):
        quiet.status("[1/1] 00_first", "cell 1/3", 0.0)
        assert quiet.stream.getvalue() == "" and quiet.ticker is None


def test_live_line_names_code_cells_only():
    """nbclient calls the start hook for every cell; the live line names the code cells it executes, numbered as
    the log numbers them, papermill's injected parameters by that name, and keeps the cell's name beside the
    progress lines the cell prints."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell("import os\nx = 1"),
        nbformat.v4.new_code_cell(""),
        nbformat.v4.new_code_cell("y = 2"),
    ]
    said, cell_seconds = [], []
    progress = CellProgress("00_first", notebook, None, cell_seconds, status=said.append)
    # papermill injects its parameters cell after the notebook was read (and counted)
    notebook.cells.insert(2, nbformat.v4.new_code_cell("# Parameters", metadata={"tags": [INJECTED_PARAMETERS]}))
    kernel_stdout = progress.hooks()["stdout_file"]
    for index, cell in enumerate(notebook.cells):
        progress.cell_start(cell, index)
        if cell.cell_type == "code" and cell.source:
            kernel_stdout.write(f"printed\n{MARK}epoch 1/1: 64/100 images\n")
            progress.cell_executed(cell, index, None)
    assert said == [
        "cell 1/2: import os",
        "cell 1/2: epoch 1/1: 64/100 images",
        "parameters: # Parameters",
        "parameters: epoch 1/1: 64/100 images",
        "cell 2/2: y = 2",
        "cell 2/2: epoch 1/1: 64/100 images",
    ]
    assert [entry["cell"] for entry in cell_seconds] == ["cell 1/2", "parameters", "cell 2/2"]


def test_log_is_opened_on_the_first_line(tmp_path):
    """A run refused before its first notebook leaves no empty log; say() goes to both, detail() to the log only."""
    path, stream = tmp_path / "logs" / "run.log", io.StringIO()
    with ReportConsole(path, stream, live=False) as console:
        assert not path.exists()
        console.detail("    00_first | cell 1/3    0.0 s")
        console.say("[1/1] 00_first: 1.0 s, 0 figures, 0 tables")
    assert stream.getvalue() == "[1/1] 00_first: 1.0 s, 0 figures, 0 tables\n"
    assert path.read_text() == "    00_first | cell 1/3    0.0 s\n[1/1] 00_first: 1.0 s, 0 figures, 0 tables\n"


def _timed_table(path, prefix: str, control_interval: tuple[float, float], control_verdict: str) -> None:
    """A timed table of a plain arm and its A/A control reading 1.00 within ``control_interval``."""
    low, high = control_interval
    columns = {f"{prefix}speedup": [1.0, 1.0], f"{prefix}speedup_low": [1.0, low], f"{prefix}speedup_high": [1.0, high]}
    arms = {"arm": ["plain", "A/A control: plain vs its copy"], "verdict": ["baseline", control_verdict]}
    pd.DataFrame({**arms, **columns}).to_csv(path)


def test_notebook_line_counts_figures_and_tables_and_names_untrustworthy_ones(tmp_path):
    """Figures are counted once (PNG and SVG are one figure), tables once (CSV and Markdown), raw times and the
    executed notebook not at all; a table with a verdict under a failed A/A control is named."""
    tables = tmp_path / "tables"
    tables.mkdir()
    _timed_table(tables / "04_speed.csv", "", (0.98, 1.07), "A/A control: point within 1.00 ± 3%, interval outside")
    _timed_table(tables / "04_fine.csv", "cpu_", (0.98, 1.02), "A/A control: within 1.00 ± 3%")
    files = [
        "04_gain.png",
        "04_gain.svg",
        "notebooks/04_x.ipynb",
        "tables/04_fine.csv",
        "tables/04_fine.md",
        "tables/04_speed.csv",
        "tables/04_speed.md",
        "tables/raw/04_speed.csv",
    ]
    assert notebook_line("[5/11] 04_x", 12.34, files, tables) == (
        f"[5/11] 04_x: 12.3 s, 1 figure, 2 tables; {NOT_TRUSTWORTHY} (A/A control failed): 04_speed"
    )
    assert notebook_line("[1/1] 03_y", 1.0, [], tables) == "[1/1] 03_y: 1.0 s, 0 figures, 0 tables"


def test_clock_reads_minutes_then_hours():
    assert [clock(s) for s in (0, 59.9, 61, 3599, 3600, 3725)] == [
        "0:00",
        "0:59",
        "1:01",
        "59:59",
        "1:00:00",
        "1:02:05",
    ]


@pytest.mark.parametrize("path", runner.list_notebooks(), ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_of_each_notebook(path, caplog):
    """papermill reads each line of a notebook's parameters cell: a line it cannot read (a second "=", as in
    ``x != y``) is a parameter papermill cannot set, and a warning it prints."""
    notebook = jupytext.read(path)
    [cell] = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    with caplog.at_level(logging.WARNING, logger="papermill"):
        names = [parameter.name for parameter in PythonTranslator.inspect(cell)]
    assert "SCALE" in names and caplog.records == []
