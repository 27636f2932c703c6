"""Figures a notebook shows reach its executed and published copies as PNGs, each once, and the runner's kernels
talk over local sockets: a real kernel runs a tiny notebook through the runner, and the console stays quiet."""

import textwrap
from pathlib import Path
from types import SimpleNamespace

import nbformat
from jupyter_core.paths import jupyter_runtime_dir

from vitstudy.report import execute, runner

# Figures as the notebooks show them (made by plots.new_figure): returned at the end of a cell (notebooks 00-05, 09;
# the kernel's first figure, made while the backend was not yet loaded before the fix, was shown twice) and
# displayed in a loop (notebook 08). Each is published once, as a PNG.
FIGURES = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
from IPython.display import display
from vitstudy import plots, report
fig = plots.new_figure((2, 1))
fig.add_subplot().plot([1, 2], [3, 4])
report.save_figure(fig, "01_returned")
fig
# %%
for name in ("01_displayed_a", "01_displayed_b"):
    shown = plots.new_figure((2, 1))
    shown.add_subplot().bar([1, 2], [3, 4])
    report.save_figure(shown, name)
    display(shown)
"""


def _outputs(cell):
    return [output for output in cell.outputs if output.output_type in ("execute_result", "display_data")]


def test_figures_a_notebook_shows_are_published_as_pngs_once(tmp_path, capfd):
    """Each figure a cell returns or displays is one image/png output of the published notebook, with no
    ``<Figure size ...>`` text; the saved figures are untouched; nothing reaches the console's stderr."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    notebooks.mkdir()
    (notebooks / "01_figures.py").write_text(textwrap.dedent(FIGURES))
    runner.run_report("smoke", out=out, notebooks=notebooks, log=lambda *a, **k: None)
    notebook = nbformat.read(out / "notebooks" / "01_figures.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    returned, displayed = code[-2:]
    for cell, count in ((returned, 1), (displayed, 2)):
        assert [sorted(output.data) for output in _outputs(cell)] == [["image/png"]] * count, cell.source
    assert "<Figure size" not in nbformat.writes(notebook)
    assert sorted(path.name for path in out.glob("*.png")) == [
        "01_displayed_a.png",
        "01_displayed_b.png",
        "01_returned.png",
    ]
    # the kernel inherits the console: no TCP warning, no other line a newcomer would read as a fault
    assert capfd.readouterr().err == ""
    assert not list(notebooks.glob("kernel-*")), "the kernel's sockets were made in the notebook's folder"


def test_the_runners_kernel_manager_uses_local_sockets():
    """The client the runner's engine builds starts kernels over IPC (no TCP warning), its sockets in jupyter's
    runtime folder, and inline figures from the start."""
    client = execute.WatchdogEngine.client_class(SimpleNamespace(nb=nbformat.v4.new_notebook()))
    manager = client.create_kernel_manager()
    assert manager.transport == "ipc" and Path(manager.ip).parent == Path(jupyter_runtime_dir())
    assert client.extra_arguments == ["--matplotlib=inline"]
