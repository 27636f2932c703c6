"""The report runner. Two tests start a real kernel, where a kernel is the point: one end-to-end run of a tiny
notebook (its files, manifest, per-cell lines, forwarded progress and published copy come from a real kernel) and
one exception inside a widget callback. The publishing rules (which folder, which scale, which files, their modes,
what a failed run leaves) run the runner with :func:`fake_kernel` in place of the kernel, or test the pure functions
of :mod:`vitstudy.report.runner` and :mod:`vitstudy.report.execute` directly."""

import json
import os
import subprocess
import sys
import textwrap

import jupytext
import matplotlib.pyplot as plt
import nbformat
import pandas as pd
import pytest

from vitstudy import progress, report
from vitstudy.bench import SHARED_TIMINGS_ENV
from vitstudy.files import output_dir
from vitstudy.report import execute, runner
from vitstudy.report.published import WIDGET_VIEW
from vitstudy.report.runner import MANIFEST

GOOD = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
import matplotlib.pyplot as plt
import pandas as pd
from vitstudy import report
fig = plt.figure()
plt.plot([1, 2], [3, 4])
report.save_figure(fig, "{n}_line")
report.save_table(pd.DataFrame({{"scale": [SCALE]}}), "{n}_scale")
"""

WIDGET_FAILS = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
import ipywidgets
from vitstudy.widgets import checked_interactive
def broken(x):
    return 1 / (x - 2)
# %%
checked_interactive(broken, x=ipywidgets.IntSlider(2, 0, 4))
"""

# The end-to-end notebook: printed text, a forwarded progress line, a table meeting its target (with where the
# kernel's outputs and shared timings went), a cache file and a live widget, in as few imports as that takes.
END_TO_END = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
import os
import ipywidgets
import pandas as pd
from vitstudy import progress, report
from vitstudy.files import cache_dir
print("not a progress line")
progress.emit("epoch 1/2 done: 123.0 im/s")
# %%
shared = os.environ["VITSTUDY_REPORT_TIMINGS"]
where = {"staging": [os.environ["VITSTUDY_OUT"]], "shared": [shared], "shared_is_dir": [os.path.isdir(shared)]}
table = pd.DataFrame({"scale": [SCALE], "verdict": ["within target (0.9–1.03)"], **where})
report.save_table(table, "01_timed")
report.save_raw(pd.DataFrame({"seconds": [1.0]}), "01_timed")
table
# %%
(cache_dir() / "runs").mkdir(parents=True, exist_ok=True)
(cache_dir() / "runs" / "model.safetensors").write_bytes(b"weights")
ipywidgets.IntSlider(3)
"""


def _quiet(*args, **kwargs):
    pass


def _write(folder, name, text="x = 1\n"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(text))


def _line_and_scale(number, scale):
    """What GOOD writes, in this process: a figure and a table of the scale."""
    fig = plt.figure(figsize=(1, 1))
    report.save_figure(fig, f"{number}_line")
    plt.close(fig)
    report.save_table(pd.DataFrame({"scale": [scale]}), f"{number}_scale")


@pytest.fixture
def fake_kernel(monkeypatch):
    """``fake_kernel(write=..., fails=False)``: the runner's kernel replaced by ``write(number, scale)`` in this
    process, under the kernel's environment (:func:`execute.kernel_environment`); it writes an executed copy, one
    cell's seconds, and raises NotebookFailed when ``fails``. Returns the list of calls (path, scale, staging and
    the run's shared-timings folder, with whether each existed during the call)."""

    def use(write=_line_and_scale, fails=False):
        calls = []

        def execute_notebook(path, scale, staging, executed_path=None, log=None, cell_seconds=None, status=None):
            shared = os.environ[SHARED_TIMINGS_ENV]
            calls.append(
                dict(path=path, scale=scale, staging=staging, shared=shared, shared_was_dir=os.path.isdir(shared))
            )
            with pytest.MonkeyPatch.context() as patch:
                for key, value in execute.kernel_environment(staging, scale).items():
                    patch.setenv(key, value)
                write(path.stem[:2], scale)
            nbformat.write(nbformat.v4.new_notebook(), executed_path)
            cell_seconds.append(
                {"cell": "cell 1/1", "seconds": 0.0, "first_line": "x = 1", "wrote": [], "cache_files": 0}
            )
            if fails:
                raise runner.NotebookFailed(f"notebook {path.name} failed in cell 1 — executed copy: {executed_path}")

        monkeypatch.setattr(runner, "execute_notebook", execute_notebook)
        return calls

    return use


def test_save_figure_writes_png_and_svg(tmp_path):
    """save_figure writes both formats under the notebook-numbered name."""
    fig = plt.figure()
    paths = report.save_figure(fig, "01_example", out=tmp_path)
    assert sorted(p.name for p in paths) == ["01_example.png", "01_example.svg"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_save_table_writes_csv_and_markdown(tmp_path):
    """save_table writes CSV and Markdown into tables/."""
    report.save_table(pd.DataFrame({"a": [1.234]}), "02_table", out=tmp_path)
    assert pd.read_csv(tmp_path / "tables" / "02_table.csv")["a"].tolist() == [1.234]
    assert "1.23" in (tmp_path / "tables" / "02_table.md").read_text()


def test_output_name_must_carry_notebook_number(tmp_path):
    """A file name without the notebook's number is refused with an example of a good one."""
    with pytest.raises(ValueError, match="'learning_curves'.*00_learning_curves"):
        report.save_table(pd.DataFrame(), "learning_curves", out=tmp_path)


def test_notebooks_import_the_outputs_without_the_runner():
    """`from vitstudy import report` gives exactly the output functions and loads neither the runner nor papermill."""
    code = (
        "import sys; from vitstudy import report; print(sorted(report.__all__), 'papermill' in sys.modules, "
        "'vitstudy.report.runner' in sys.modules)"
    )
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert printed.strip() == "['check_name', 'save_figure', 'save_raw', 'save_table'] False False"


def test_report_runs_a_notebook_end_to_end_in_a_kernel(tmp_path):
    """A real kernel runs the notebook at the report's scale: its files are published (the executed notebook cleaned
    of run-to-run noise), the manifest records each cell's seconds, files and cache files and the rows within target,
    the terminal gets one line per cell and the kernel's progress lines only, and the staging and shared-timings
    folders lived in the cache and are gone."""
    notebooks, out, lines = tmp_path / "nb", tmp_path / "out", []
    _write(notebooks, "01_end_to_end", END_TO_END)
    manifest = runner.run_report("smoke", out=out, notebooks=notebooks, log=lambda *a, **k: lines.append(a[0]))
    saved = json.loads((out / MANIFEST).read_text())
    assert saved == json.loads(json.dumps(manifest)) and saved["scale"] == "smoke"
    entry = saved["notebooks"]["01_end_to_end"]
    assert entry["scale"] == "smoke" and entry["seconds"] > 0 and "torch" in entry["environment"]
    assert entry["files"] == [
        "notebooks/01_end_to_end.ipynb",
        "tables/01_timed.csv",
        "tables/01_timed.md",
        "tables/raw/01_timed.csv",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notebooks", "tables"]
    # each code cell's seconds, papermill's injected parameters included, and what it wrote
    cells = entry["cells"]
    assert [cell["cell"] for cell in cells] == ["cell 1/4", "parameters", "cell 2/4", "cell 3/4", "cell 4/4"]
    assert cells[2]["first_line"] == "import os" and all(cell["seconds"] >= 0 for cell in cells)
    assert sum(cell["seconds"] for cell in cells) <= entry["seconds"]
    assert cells[2]["wrote"] == [] and cells[2]["cache_files"] == 0
    assert cells[3]["wrote"] == ["tables/01_timed.csv", "tables/01_timed.md", "tables/raw/01_timed.csv"]
    assert cells[4]["wrote"] == [] and cells[4]["cache_files"] == 1
    assert entry["within_target_rows"] == {"01_timed": 1}
    # the kernel ran at the scale, wrote into a staging folder in the cache, shared a folder of the run; both gone
    table = pd.read_csv(out / "tables" / "01_timed.csv")
    assert table["scale"].item() == "smoke" and table["shared_is_dir"].item()
    for folder in (table["staging"].item(), table["shared"].item()):
        assert folder.startswith(str(runner.staging_root())) and not os.path.exists(folder)
    # the terminal: one line per code cell with its seconds and the elapsed time, the marked kernel lines only
    cell_lines = [line for line in lines if "01_end_to_end | cell" in line]
    assert [line.split("|")[1].split()[1] for line in cell_lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert all(" s  (elapsed 0:" in line for line in cell_lines) and "import os" in cell_lines[1]
    assert any(line.endswith("01_end_to_end | epoch 1/2 done: 123.0 im/s") for line in lines)
    assert not any("not a progress line" in line for line in lines)
    # the published notebook: printed text and the table as HTML, without papermill's metadata, random cell ids,
    # live widget views or progress lines
    notebook = nbformat.read(out / "notebooks" / "01_end_to_end.ipynb", as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("not a progress line" in o.get("text", "") for o in outputs)
    assert any("<table" in o.get("data", {}).get("text/html", "") for o in outputs)
    assert "papermill" not in notebook.metadata and "widgets" not in notebook.metadata
    assert [cell.id for cell in notebook.cells] == [f"cell-{i:02d}" for i in range(len(notebook.cells))]
    for cell in notebook.cells:
        assert "execution" not in cell.metadata and "papermill" not in cell.metadata
    assert not any(progress.MARK in o.get("text", "") or WIDGET_VIEW in o.get("data", {}) for o in outputs)


def test_widget_callback_error_fails_the_report_and_keeps_old_files(tmp_path):
    """An exception inside a widget callback (a real kernel) fails the run, naming notebook and cell and the
    executed copy, which is there to open; the files and manifest of the last good run stay."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "03_widget", WIDGET_FAILS)
    (out / "tables").mkdir(parents=True)
    (out / "03_line.png").write_bytes(b"last good figure")
    (out / MANIFEST).write_text(json.dumps({"scale": "smoke", "notebooks": {"03_widget": {"files": ["03_line.png"]}}}))
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    with pytest.raises(runner.NotebookFailed, match=r"03_widget.py failed in cell .*ZeroDivisionError") as caught:
        runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    executed = str(caught.value).rsplit("executed copy: ", 1)[1]
    assert executed.endswith("03_widget.ipynb") and os.path.isfile(executed)
    assert not list(runner.staging_root().glob("staging-*"))


def test_report_publishes_each_notebook_and_records_it(tmp_path, fake_kernel):
    """A run executes each chosen notebook in order at the scale, publishes its files and records them in the
    manifest, one entry per notebook."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "00_first")
    _write(notebooks, "01_second")
    calls = fake_kernel()
    manifest = runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    assert [(call["path"].stem, call["scale"]) for call in calls] == [("00_first", "smoke"), ("01_second", "smoke")]
    assert pd.read_csv(out / "tables" / "01_scale.csv")["scale"].tolist() == ["smoke"]
    saved = json.loads((out / MANIFEST).read_text())
    assert saved == json.loads(json.dumps(manifest)) and list(saved["notebooks"]) == ["00_first", "01_second"]
    entry = saved["notebooks"]["01_second"]
    assert entry["scale"] == "smoke" and [cell["cell"] for cell in entry["cells"]] == ["cell 1/1"]
    assert entry["files"] == [
        "01_line.png",
        "01_line.svg",
        "notebooks/01_second.ipynb",
        "tables/01_scale.csv",
        "tables/01_scale.md",
    ]


def test_only_selects_notebooks_by_number(tmp_path):
    """--only 01 (a number or a name) chooses notebook 01 alone."""
    _write(tmp_path, "00_first")
    _write(tmp_path, "01_second")
    assert [p.stem for p in runner.select_notebooks(["01"], tmp_path)] == ["01_second"]
    assert [p.stem for p in runner.select_notebooks(["1", "01_second"], tmp_path)] == ["01_second"]
    assert [p.stem for p in runner.select_notebooks(None, tmp_path)] == ["00_first", "01_second"]


def test_unknown_notebook_is_named(tmp_path):
    """--only with a number that has no notebook names it and lists the notebooks."""
    _write(tmp_path, "00_first", GOOD.format(n="00"))
    with pytest.raises(ValueError, match="no notebook '07'.*00_first"):
        runner.select_notebooks(["07"], tmp_path)


def test_failed_notebook_keeps_the_last_good_files(tmp_path, fake_kernel):
    """A notebook that fails publishes nothing of its run: the last good files and manifest stay, its staging goes."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "03_widget")
    fake_kernel()
    runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    calls = fake_kernel(write=lambda number, scale: _line_and_scale(number, "changed"), fails=True)
    with pytest.raises(runner.NotebookFailed, match="03_widget.py failed"):
        runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    assert not calls[0]["staging"].exists() and not list(runner.staging_root().glob("staging-*"))


def test_cli_reports_failure_with_exit_code(tmp_path, capsys):
    """`python -m vitstudy report` exits 2 with the reason, in one line, on a bad --only."""
    from vitstudy.__main__ import main

    assert main(["report", "--scale", "smoke", "--only", "99", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no notebook '99'" in err and err.count("\n") == 1


def test_each_scale_writes_to_its_own_folder(tmp_path, fake_kernel):
    """Without out=, the default scale (quick) writes to the figures folder itself, any other to figures/<scale>/,
    leaving the quick report's files alone."""
    assert runner.default_out("quick") == output_dir() and runner.default_out("smoke") == output_dir() / "smoke"
    notebooks = tmp_path / "nb"
    _write(notebooks, "00_first")
    fake_kernel()
    runner.run_report("quick", notebooks=notebooks, log=_quiet)
    quick_png = (output_dir() / "00_line.png").read_bytes()
    runner.run_report("smoke", notebooks=notebooks, log=_quiet)
    assert pd.read_csv(output_dir() / "smoke" / "tables" / "00_scale.csv")["scale"].tolist() == ["smoke"]
    assert pd.read_csv(output_dir() / "tables" / "00_scale.csv")["scale"].tolist() == ["quick"]
    assert (output_dir() / "00_line.png").read_bytes() == quick_png


def test_manifest_of_another_scale_is_refused(tmp_path, fake_kernel):
    """Running one scale into a folder whose manifest records another (at its top or in a notebook's entry) is
    refused, naming both and the folder to use, before any notebook runs; the same scale continues the manifest."""
    out = tmp_path / "out"
    for recorded in ({"scale": "quick"}, {"notebooks": {"00_first": {"scale": "quick"}}}):
        with pytest.raises(ValueError, match=r"records a report at scale 'quick'.*would mix scales.*figures/smoke"):
            runner.open_manifest(recorded, "smoke", out)
    assert runner.open_manifest({}, "smoke", out) == {"scale": "smoke", "notebooks": {}}
    kept = {"scale": "smoke", "notebooks": {"00_first": {"scale": "smoke", "files": ["00_a.png"]}}}
    assert runner.open_manifest(json.loads(json.dumps(kept)), "smoke", out) == kept
    notebooks = tmp_path / "nb"
    _write(notebooks, "00_first")
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"scale": "quick", "notebooks": {}}))
    calls = fake_kernel()
    with pytest.raises(ValueError, match="records a report at scale 'quick'"):
        runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    assert calls == [] and json.loads((out / MANIFEST).read_text())["scale"] == "quick"


def test_published_files_have_the_umask_default_mode(tmp_path, fake_kernel):
    """Figures and tables published by a run are readable by others (0644 under umask 022), not 0600."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "00_first")
    fake_kernel()
    old = os.umask(0o022)
    try:
        runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    finally:
        os.umask(old)
    published = [out / "00_line.png", out / "00_line.svg", out / "tables" / "00_scale.csv", out / MANIFEST]
    assert {oct(p.stat().st_mode & 0o777) for p in published} == {"0o644"}


def test_staging_is_outside_the_output_folder(tmp_path, fake_kernel):
    """Notebooks write into a staging folder in the cache (the kernel's $VITSTUDY_OUT), not under the output folder,
    beside the run's folder of shared comparisons (vitstudy.bench.shared); both are removed after."""
    staging = tmp_path / "staging"
    assert execute.kernel_environment(staging, "smoke") == {
        "VITSTUDY_OUT": str(staging),
        "VITSTUDY_SCALE": "smoke",
        "MPLBACKEND": "Agg",
        progress.ENV: "lines",
    }
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "05_where")
    calls = fake_kernel()
    runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    [call] = calls
    assert str(call["staging"]).startswith(str(runner.staging_root())) and not str(call["staging"]).startswith(str(out))
    assert call["shared_was_dir"] and call["shared"].startswith(str(runner.staging_root()))
    assert not call["staging"].exists() and not os.path.exists(call["shared"])
    assert sorted(p.name for p in out.iterdir()) == [
        "05_line.png",
        "05_line.svg",
        "manifest.json",
        "notebooks",
        "tables",
    ]


def test_staging_left_by_a_killed_run_is_removed(tmp_path, fake_kernel):
    """A staging folder whose process is gone (SIGKILLed run) is deleted by the next run; a live one stays."""
    notebooks = tmp_path / "nb"
    _write(notebooks, "00_first")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = runner.staging_root() / f"staging-{dead.pid}-00_first-abc123"
    live = runner.staging_root() / f"staging-{os.getpid()}-00_first-def456"
    for folder in (stale, live):
        (folder / "tables").mkdir(parents=True)
        (folder / "00_half.png").write_bytes(b"half")
    fake_kernel()
    runner.run_report("smoke", out=tmp_path / "out", notebooks=notebooks, log=_quiet)
    assert not stale.exists() and live.exists()


def test_save_raw_writes_csv_under_tables_raw(tmp_path):
    """Raw per-call times go to tables/raw/ as CSV only; profiles to tables/profiles/; other kinds are refused."""
    import pandas as pd

    report.save_raw(pd.DataFrame({"arm": ["a"], "seconds_per_call": [0.5]}), "04_speed", out=tmp_path)
    assert pd.read_csv(tmp_path / "tables" / "raw" / "04_speed.csv")["seconds_per_call"].tolist() == [0.5]
    report.save_raw(pd.DataFrame({"operator": ["mm"]}), "04_speed", kind="profiles", out=tmp_path)
    assert (tmp_path / "tables" / "profiles" / "04_speed.csv").is_file()
    with pytest.raises(ValueError, match="kind='other' is not allowed"):
        report.save_raw(pd.DataFrame(), "04_speed", kind="other", out=tmp_path)


def test_epoch_progress_lines_only_when_the_report_asks(monkeypatch, capsys):
    from vitstudy import progress

    monkeypatch.delenv(progress.ENV, raising=False)
    progress.EpochProgress(0, 2, 100).done(dict(images_per_s=50.0, loss=1.0, top1=10.0, seconds=2.0))
    assert capsys.readouterr().out == ""
    monkeypatch.setenv(progress.ENV, "lines")
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)
    lines = progress.EpochProgress(0, 2, 100)
    lines.step(50)
    lines.done(dict(images_per_s=50.0, loss=1.0, top1=10.0, seconds=2.0))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[progress] epoch 1/2: 50/100 images,") and out[0].endswith(" s")
    assert out[1] == "[progress] epoch 1/2 done: 50.0 im/s, loss 1.000, train top-1 10.0%, 2.0 s"


def test_training_prints_an_epoch_line_for_the_report(digits_cfg, tmp_path, monkeypatch, capsys):
    from vitstudy import progress
    from vitstudy.train import train

    monkeypatch.setenv(progress.ENV, "lines")
    train(digits_cfg, tmp_path / "run", progress=False)
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith(progress.MARK)]
    assert [line.split(" done:")[0] for line in out] == ["[progress] epoch 1/2", "[progress] epoch 2/2"]
    assert all(" im/s, loss " in line for line in out)


def test_study_notebook_runs_only_at_its_scales(tmp_path):
    """A notebook with RUNS_AT runs only at those scales; other notebooks never run at a study scale."""
    for name, body in (("00_a.py", "x = 1\n"), ("08_study.py", 'RUNS_AT = ("smoke", "scratch")\n')):
        (tmp_path / name).write_text(body)
    assert [p.stem for p in runner.select_notebooks(None, tmp_path, "quick")] == ["00_a"]
    assert [p.stem for p in runner.select_notebooks(None, tmp_path, "scratch")] == ["08_study"]
    assert [p.stem for p in runner.select_notebooks(None, tmp_path, "smoke")] == ["00_a", "08_study"]
    with pytest.raises(ValueError, match="notebook 08_study does not run at scale 'quick'"):
        runner.select_notebooks(["08"], tmp_path, "quick")


def test_a_run_names_the_notebooks_it_did_not_run_whose_published_copy_is_outdated(tmp_path, fake_kernel):
    """After the chosen notebooks, one line names each other notebook whose published copy no longer holds its
    source's code (edited since) or cannot be read; one never published, or still current, is not named."""
    notebooks, out, lines = tmp_path / "nb", tmp_path / "out", []
    for name in ("00_first", "01_edited", "02_current", "03_damaged", "04_never_published"):
        _write(notebooks, name)
    (out / "notebooks").mkdir(parents=True)
    for name in ("01_edited", "02_current"):
        nbformat.write(jupytext.read(notebooks / f"{name}.py"), out / "notebooks" / f"{name}.ipynb")
    (out / "notebooks" / "03_damaged.ipynb").write_text("{not json")
    _write(notebooks, "01_edited", "x = 2\n")
    fake_kernel()
    runner.run_report("smoke", only=["00"], out=out, notebooks=notebooks, log=lambda *a, **k: lines.append(a[0]))
    assert [line for line in lines if "older than" in line] == [
        "published copies older than their notebook's code (re-run them): 01_edited, 03_damaged"
    ]
    lines.clear()
    runner.run_report("smoke", out=out, notebooks=notebooks, log=lambda *a, **k: lines.append(a[0]))
    assert not any("older than" in line for line in lines)  # every notebook ran: nothing left to name
