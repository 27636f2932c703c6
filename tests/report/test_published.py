"""The executed notebooks the report publishes: outputs kept, run-to-run noise removed, identical on a re-run. The
cleaning is a pure function of the executed notebook (:func:`clean_notebook`), tested on notebooks shaped like
papermill's; the end-to-end report test (tests/report/test_report.py) checks a copy published from a real kernel."""

import nbformat

from vitstudy import progress
from vitstudy.report.published import WIDGET_VIEW, clean_notebook, publish_notebook


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
