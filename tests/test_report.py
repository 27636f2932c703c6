import json
import os
import subprocess
import sys
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from vitstudy import report
from vitstudy.files import output_dir
from vitstudy.report import runner
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


WHERE = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
import os
import pandas as pd
from vitstudy import report
shared = os.environ["VITSTUDY_REPORT_TIMINGS"]
where = {{"staging": [os.environ["VITSTUDY_OUT"]], "shared": [shared], "shared_is_dir": [os.path.isdir(shared)]}}
report.save_table(pd.DataFrame(where), "{n}_where")
"""


def _quiet(*args, **kwargs):
    pass


def _write(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(text))


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


def test_report_runs_notebooks_and_writes_manifest(tmp_path):
    """A run executes each notebook with the scale, publishes its files and records it in the manifest."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "00_first", GOOD.format(n="00"))
    _write(notebooks, "01_second", GOOD.format(n="01"))
    manifest = runner.run_report("smoke", out=out, notebooks=notebooks, log=lambda *a, **k: None)
    assert (out / "00_line.png").is_file() and (out / "01_line.svg").is_file()
    assert pd.read_csv(out / "tables" / "01_scale.csv")["scale"].tolist() == ["smoke"]
    saved = json.loads((out / "manifest.json").read_text())
    assert saved == json.loads(json.dumps(manifest))
    entry = saved["notebooks"]["01_second"]
    assert entry["scale"] == "smoke" and entry["seconds"] > 0 and "torch" in entry["environment"]
    # each code cell's seconds, papermill's injected parameters included, so a reader sees where the time went
    assert [cell["cell"] for cell in entry["cells"]] == ["cell 1/2", "parameters", "cell 2/2"]
    assert entry["cells"][-1]["first_line"] == "import matplotlib.pyplot as plt"
    assert all(cell["seconds"] >= 0 for cell in entry["cells"])
    assert sum(cell["seconds"] for cell in entry["cells"]) <= entry["seconds"]
    assert entry["files"] == [
        "01_line.png",
        "01_line.svg",
        "notebooks/01_second.ipynb",
        "tables/01_scale.csv",
        "tables/01_scale.md",
    ]


def test_only_selects_notebooks_by_number(tmp_path):
    """--only 01 runs notebook 01 alone."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "00_first", GOOD.format(n="00"))
    _write(notebooks, "01_second", GOOD.format(n="01"))
    runner.run_report("smoke", only=["01"], out=out, notebooks=notebooks, log=lambda *a, **k: None)
    assert not (out / "00_line.png").exists() and (out / "01_line.png").exists()


def test_unknown_notebook_is_named(tmp_path):
    """--only with a number that has no notebook names it and lists the notebooks."""
    _write(tmp_path, "00_first", GOOD.format(n="00"))
    with pytest.raises(ValueError, match="no notebook '07'.*00_first"):
        runner.select_notebooks(["07"], tmp_path)


def test_widget_callback_error_fails_the_report_and_keeps_old_files(tmp_path):
    """An exception inside a widget callback fails the run, naming notebook and cell; old outputs stay."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "03_widget", GOOD.format(n="03"))
    runner.run_report("smoke", out=out, notebooks=notebooks, log=lambda *a, **k: None)
    before = (out / "03_line.png").read_bytes()
    _write(notebooks, "03_widget", WIDGET_FAILS)
    with pytest.raises(runner.NotebookFailed, match=r"03_widget.py failed in cell .*ZeroDivisionError"):
        runner.run_report("smoke", out=out, notebooks=notebooks, log=lambda *a, **k: None)
    assert (out / "03_line.png").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")]


def test_cli_reports_failure_with_exit_code(tmp_path, capsys):
    """`python -m vitstudy report` exits 2 with the reason, in one line, on a bad --only."""
    from vitstudy.__main__ import main

    assert main(["report", "--scale", "smoke", "--only", "99", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no notebook '99'" in err and err.count("\n") == 1


def test_default_scale_writes_to_figures(tmp_path):
    """A quick-scale run without out= writes to the figures folder itself."""
    notebooks = tmp_path / "nb"
    _write(notebooks, "00_first", GOOD.format(n="00"))
    runner.run_report("quick", notebooks=notebooks, log=_quiet)
    assert (output_dir() / "00_line.png").is_file()


def test_other_scale_writes_to_its_own_folder(tmp_path):
    """A smoke run without out= writes to figures/smoke/ and leaves the quick report's files alone."""
    notebooks = tmp_path / "nb"
    _write(notebooks, "00_first", GOOD.format(n="00"))
    runner.run_report("quick", notebooks=notebooks, log=_quiet)
    quick_png = (output_dir() / "00_line.png").read_bytes()
    runner.run_report("smoke", notebooks=notebooks, log=_quiet)
    assert runner.default_out("smoke") == output_dir() / "smoke"
    assert pd.read_csv(output_dir() / "smoke" / "tables" / "00_scale.csv")["scale"].tolist() == ["smoke"]
    assert pd.read_csv(output_dir() / "tables" / "00_scale.csv")["scale"].tolist() == ["quick"]
    assert (output_dir() / "00_line.png").read_bytes() == quick_png


def test_manifest_of_another_scale_is_refused(tmp_path):
    """Running one scale into a folder whose manifest records another is refused before any notebook runs."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "00_first", GOOD.format(n="00"))
    runner.run_report("quick", out=out, notebooks=notebooks, log=_quiet)
    before = (out / MANIFEST).read_text()
    with pytest.raises(ValueError, match=r"records a report at scale 'quick'.*would mix scales.*figures/smoke"):
        runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    assert (out / MANIFEST).read_text() == before
    assert json.loads(before)["scale"] == "quick"


def test_published_files_have_the_umask_default_mode(tmp_path):
    """Figures and tables published by a run are readable by others (0644 under umask 022), not 0600."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "00_first", GOOD.format(n="00"))
    old = os.umask(0o022)
    try:
        runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    finally:
        os.umask(old)
    published = [out / "00_line.png", out / "00_line.svg", out / "tables" / "00_scale.csv", out / MANIFEST]
    assert {oct(p.stat().st_mode & 0o777) for p in published} == {"0o644"}


def test_staging_is_outside_the_output_folder(tmp_path):
    """Notebooks write into a staging folder in the cache, not under the output folder, and it is removed after."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "05_where", WHERE.format(n="05"))
    runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    staging = pd.read_csv(out / "tables" / "05_where.csv")["staging"].item()
    assert staging.startswith(str(runner.staging_root())) and not staging.startswith(str(out))
    assert not os.path.exists(staging)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notebooks", "tables"]
    # the run's folder of shared comparisons (vitstudy.bench.shared) lives in the cache while it runs, then goes
    shared = pd.read_csv(out / "tables" / "05_where.csv")
    assert shared["shared_is_dir"].item() and shared["shared"].item().startswith(str(runner.staging_root()))
    assert not os.path.exists(shared["shared"].item())


def test_staging_left_by_a_killed_run_is_removed(tmp_path):
    """A staging folder whose process is gone (SIGKILLed run) is deleted by the next run; a live one stays."""
    notebooks = tmp_path / "nb"
    _write(notebooks, "00_first", GOOD.format(n="00"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = runner.staging_root() / f"staging-{dead.pid}-00_first-abc123"
    live = runner.staging_root() / f"staging-{os.getpid()}-00_first-def456"
    for folder in (stale, live):
        (folder / "tables").mkdir(parents=True)
        (folder / "00_half.png").write_bytes(b"half")
    runner.run_report("smoke", out=tmp_path / "out", notebooks=notebooks, log=_quiet)
    assert not stale.exists() and live.exists()


def test_failed_notebook_keeps_its_executed_copy(tmp_path):
    """A failure names the executed copy of the notebook, and that file is there to open."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "03_widget", WIDGET_FAILS)
    with pytest.raises(runner.NotebookFailed, match="executed copy: ") as caught:
        runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)
    executed = str(caught.value).rsplit("executed copy: ", 1)[1]
    assert executed.endswith("03_widget.ipynb") and os.path.isfile(executed)


def test_save_raw_writes_csv_under_tables_raw(tmp_path):
    """Raw per-call times go to tables/raw/ as CSV only; profiles to tables/profiles/; other kinds are refused."""
    import pandas as pd

    report.save_raw(pd.DataFrame({"arm": ["a"], "seconds_per_call": [0.5]}), "04_speed", out=tmp_path)
    assert pd.read_csv(tmp_path / "tables" / "raw" / "04_speed.csv")["seconds_per_call"].tolist() == [0.5]
    report.save_raw(pd.DataFrame({"operator": ["mm"]}), "04_speed", kind="profiles", out=tmp_path)
    assert (tmp_path / "tables" / "profiles" / "04_speed.csv").is_file()
    with pytest.raises(ValueError, match="kind='other' is not allowed"):
        report.save_raw(pd.DataFrame(), "04_speed", kind="other", out=tmp_path)


PROGRESS = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
from vitstudy import progress
print("not a progress line")
progress.emit("epoch 1/2 done: 123.0 im/s")
# %%
x = 1
"""


def test_report_prints_each_cell_and_the_kernels_progress_lines(tmp_path):
    """Per code cell one line with its seconds and the elapsed time; marked kernel lines reach the terminal,
    other output stays in the notebook."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "03_progress", PROGRESS)
    lines = []
    runner.run_report("smoke", out=out, notebooks=notebooks, log=lambda *a, **k: lines.append(a[0]))
    cells = [line for line in lines if "03_progress | cell" in line]
    assert [line.split("|")[1].split()[1] for line in cells] == ["1/3", "2/3", "3/3"]
    assert all(" s  (elapsed 0:" in line for line in cells)
    assert "from vitstudy import progress" in cells[1] and "x = 1" in cells[2]
    assert any(line.endswith("03_progress | epoch 1/2 done: 123.0 im/s") for line in lines)
    assert not any("not a progress line" in line for line in lines)


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


WRITES = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
import pandas as pd
from vitstudy import report
from vitstudy.files import cache_dir
# %%
table = pd.DataFrame({{"verdict": ["within target (0.9–1.03)", "below target (0.9–1.03)", "baseline"]}})
report.save_table(table, "{n}_timed")
report.save_raw(pd.DataFrame({{"seconds": [1.0]}}), "{n}_timed")
# %%
(cache_dir() / "runs").mkdir(parents=True, exist_ok=True)
(cache_dir() / "runs" / "model.safetensors").write_bytes(b"weights")
"""


def test_manifest_cells_record_what_they_wrote(tmp_path):
    """Each cell's manifest entry lists its output files and its cache files; the notebook's entry counts the rows
    within target of each table it wrote."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    _write(notebooks, "04_writes", WRITES.format(n="04"))
    entry = runner.run_report("smoke", out=out, notebooks=notebooks, log=_quiet)["notebooks"]["04_writes"]
    imports, timed, cached = (entry["cells"][i] for i in (2, 3, 4))
    assert imports["wrote"] == [] and imports["cache_files"] == 0
    assert timed["wrote"] == ["tables/04_timed.csv", "tables/04_timed.md", "tables/raw/04_timed.csv"]
    assert timed["cache_files"] == 0
    assert cached["wrote"] == [] and cached["cache_files"] == 1
    assert entry["within_target_rows"] == {"04_timed": 1}
