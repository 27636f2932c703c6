"""The executed notebooks the report publishes: outputs kept, run-to-run noise removed, identical on a re-run."""

import textwrap

import nbformat

from vitstudy import progress
from vitstudy.report import runner
from vitstudy.report.published import WIDGET_VIEW, clean_notebook

NOTEBOOK = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
import ipywidgets
import pandas as pd
from vitstudy import progress
progress.emit("epoch 1/1")  # a progress line: forwarded to the terminal, not published
print("what this run shows: 2 rows")
# %%
pd.DataFrame({"scale": [SCALE], "rows": [2]})
# %%
ipywidgets.IntSlider(3)
"""


def _run(tmp_path, name="05_shown"):
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    notebooks.mkdir(exist_ok=True)
    (notebooks / f"{name}.py").write_text(textwrap.dedent(NOTEBOOK))
    runner.run_report("smoke", out=out, notebooks=notebooks, log=lambda *a, **k: None)
    return out / "notebooks" / f"{name}.ipynb"


def test_executed_notebook_is_published_with_its_outputs(tmp_path):
    """The report writes notebooks/NN_name.ipynb with the printed text and the table as HTML."""
    published = _run(tmp_path)
    notebook = nbformat.read(published, as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("what this run shows: 2 rows" in o.get("text", "") for o in outputs)
    assert any("text/html" in o.get("data", {}) and "<table" in o["data"]["text/html"] for o in outputs)


def test_published_notebook_has_no_run_to_run_noise(tmp_path):
    """No papermill/execution metadata, numbered cell ids, no live widget views, no progress lines."""
    notebook = nbformat.read(_run(tmp_path), as_version=4)
    assert "papermill" not in notebook.metadata and "widgets" not in notebook.metadata
    assert [cell.id for cell in notebook.cells] == [f"cell-{i:02d}" for i in range(len(notebook.cells))]
    for cell in notebook.cells:
        assert "execution" not in cell.metadata and "papermill" not in cell.metadata
        for output in cell.get("outputs", []):
            assert WIDGET_VIEW not in output.get("data", {})
            assert progress.MARK not in output.get("text", "")


def test_rerun_without_changes_publishes_the_same_file(tmp_path):
    """Two runs of an unchanged notebook publish byte-identical executed notebooks."""
    first = _run(tmp_path).read_bytes()
    assert _run(tmp_path).read_bytes() == first


def test_clean_notebook_drops_a_stream_left_empty():
    """A stream output holding only progress lines disappears instead of leaving an empty box."""
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=progress.MARK + "epoch 1\n")]
    notebook.cells = [cell]
    assert clean_notebook(notebook).cells[0].outputs == []
