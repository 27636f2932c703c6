"""The executed notebooks the report publishes: outputs kept, run-to-run noise removed, identical on a re-run. The
cleaning is a pure function of the executed notebook (:func:`clean_notebook`), tested on notebooks shaped like
papermill's; the end-to-end report test (tests/report/test_report.py) checks a copy published from a real kernel.
The committed copies under figures/ show their figures as images and ran their sources' code."""

import json
from pathlib import Path

import jupytext
import nbformat
import pytest

from vitstudy import progress
from vitstudy.report.published import (
    INJECTED_PARAMETERS,
    WIDGET_VIEW,
    clean_notebook,
    code_differences,
    is_figure_repr,
    publish_notebook,
)
from vitstudy.report.runner import MANIFEST


def _executed(run):
    """An executed notebook as papermill writes one: metadata, cell ids and widget model ids differ with ``run``."""
    stamp = f"2024-01-0{run}T10:00:00"
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["papermill"] = {"start_time": stamp, "duration": run}
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {f"model-{run}": {}}}}
    printed = nbformat.v4.new_code_cell("print(...)", execution_count=1)
    printed.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"what this run shows: 2 rows\n{progress.MARK}epoch 1\n")
    ]
    table = nbformat.v4.new_code_cell("table", execution_count=2)
    table.outputs = [
        nbformat.v4.new_output(
            "execute_result",
            {"text/html": "<table><tr><td>2</td></tr></table>", "text/plain": "rows 2"},
            execution_count=2,
            metadata={"execution": {"iopub.status.idle": stamp}},
        )
    ]
    widget = nbformat.v4.new_code_cell("ipywidgets.IntSlider(3)", execution_count=3)
    widget.outputs = [
        nbformat.v4.new_output(
            "execute_result", {WIDGET_VIEW: {"model_id": f"model-{run}"}, "text/plain": "IntSlider"}, execution_count=3
        )
    ]
    notebook.cells = [nbformat.v4.new_markdown_cell("# title"), printed, table, widget]
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"random-{run}-{index}"
        cell.metadata.update(papermill={"start_time": stamp, "duration": run}, execution={"iopub.execute_input": stamp})
    return notebook


def test_published_notebook_keeps_outputs_and_drops_run_to_run_noise():
    """Printed text and tables stay; no papermill/execution metadata, numbered cell ids, no live widget views, no
    progress lines."""
    notebook = clean_notebook(_executed(1))
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert [o.get("text") for o in outputs if o.output_type == "stream"] == ["what this run shows: 2 rows\n"]
    assert any("<table" in o.get("data", {}).get("text/html", "") for o in outputs)
    assert "papermill" not in notebook.metadata and "widgets" not in notebook.metadata
    assert [cell.id for cell in notebook.cells] == [f"cell-{i:02d}" for i in range(len(notebook.cells))]
    for cell in notebook.cells:
        assert "execution" not in cell.metadata and "papermill" not in cell.metadata
        for output in cell.get("outputs", []):
            assert WIDGET_VIEW not in output.get("data", {}) and "execution" not in output.get("metadata", {})


def test_rerun_without_changes_publishes_the_same_file(tmp_path):
    """Two runs of an unchanged notebook (only papermill's times, ids and widget models differ) publish
    byte-identical files."""
    published = []
    for run in (1, 2):
        executed = tmp_path / f"run{run}.ipynb"
        nbformat.write(_executed(run), executed)
        published.append(publish_notebook(executed, tmp_path / f"published{run}.ipynb").read_bytes())
    assert published[0] == published[1]


def test_clean_notebook_drops_a_stream_left_empty():
    """A stream output holding only progress lines disappears instead of leaving an empty box."""
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=progress.MARK + "epoch 1\n")]
    notebook.cells = [cell]
    assert clean_notebook(notebook).cells[0].outputs == []


def _figure_output(with_png):
    data = {"text/plain": "<Figure size 1600x340 with 5 Axes>"} | ({"image/png": "iVBORw0KGgo="} if with_png else {})
    return nbformat.v4.new_output("execute_result", data, execution_count=1)


def test_clean_notebook_drops_the_figure_repr_beside_its_png_only():
    """A figure's PNG loses its ``<Figure size ...>`` stand-in; a figure shown as that text alone keeps it (and is
    what :func:`is_figure_repr` finds)."""
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("fig", execution_count=1)
    cell.outputs = [_figure_output(with_png=True), _figure_output(with_png=False)]
    notebook.cells = [cell]
    shown, unrendered = clean_notebook(notebook).cells[0].outputs
    assert list(shown.data) == ["image/png"] and not is_figure_repr(shown)
    assert is_figure_repr(unrendered)


SOURCE = """\
# %% tags=["parameters"]
SCALE = "quick"

# %% [markdown]
# A table.

# %%
table = make_table(SCALE)
table
"""


def _published(tmp_path, source):
    """What the report publishes of ``source``: its cells, papermill's injected parameters cell after the first."""
    path = tmp_path / "01_table.py"
    path.write_text(source)
    notebook = jupytext.read(path)
    injected = nbformat.v4.new_code_cell('# Parameters\nSCALE = "smoke"\n', metadata={"tags": [INJECTED_PARAMETERS]})
    notebook.cells.insert(1, injected)
    return notebook, path


def test_published_code_equals_its_source_despite_the_injected_parameters(tmp_path):
    notebook, path = _published(tmp_path, SOURCE)
    assert code_differences(notebook, path) == []


def test_a_source_changed_after_publishing_is_named_by_cell_and_line(tmp_path):
    """A changed line names its code cell and both lines; a cell added to the source names both counts."""
    notebook, path = _published(tmp_path, SOURCE)
    path.write_text(SOURCE.replace("make_table(SCALE)", "make_table(SCALE, rows=3)") + "\n# %%\nprint(table)\n")
    assert code_differences(notebook, path) == [
        "code cell 2: 'table = make_table(SCALE)' published, 'table = make_table(SCALE, rows=3)' in 01_table.py",
        "2 code cells published, 3 in 01_table.py",
    ]


# The committed report: every published notebook under figures/ (the quick scale's and each other scale's folder).
# These read the committed files, so a notebook source edited without re-running the report fails them.
FIGURES = Path(__file__).resolve().parents[2] / "figures"
PUBLISHED = sorted([*FIGURES.glob("notebooks/*.ipynb"), *FIGURES.glob("*/notebooks/*.ipynb")])


def _code_outputs(notebook):
    return [(index, o) for index, cell in enumerate(notebook.cells) if cell.cell_type == "code" for o in cell.outputs]


@pytest.mark.parametrize("published", PUBLISHED, ids=[str(p.relative_to(FIGURES)) for p in PUBLISHED])
def test_committed_notebook_shows_each_saved_figure_as_an_image(published):
    """No output is a figure's text repr alone, and the notebook shows at least as many PNGs as it saved (the PNG
    files its manifest entry lists): every figure a reader should see is there."""
    notebook = nbformat.read(published, as_version=4)
    outputs = _code_outputs(notebook)
    unrendered = sorted({index for index, output in outputs if is_figure_repr(output)})
    assert unrendered == [], (
        f"{published.name}: cell indices {unrendered} show a figure as '<Figure size ...>' text only"
    )
    manifest = json.loads((published.parent.parent / MANIFEST).read_text())
    saved = [f for f in manifest["notebooks"][published.stem]["files"] if Path(f).suffix == ".png"]
    shown = sum("image/png" in output.get("data", {}) for _, output in outputs)
    assert shown >= len(saved), f"{published.name} saves {len(saved)} PNG figures and shows {shown} images"


@pytest.mark.parametrize("published", PUBLISHED, ids=[str(p.relative_to(FIGURES)) for p in PUBLISHED])
def test_committed_notebook_ran_its_sources_code(published):
    """The published copy's code cells are its source's (``notebooks/NN_name.py``): re-run the report after editing
    a notebook."""
    source = FIGURES.parent / "notebooks" / f"{published.stem}.py"
    assert code_differences(nbformat.read(published, as_version=4), source) == []
