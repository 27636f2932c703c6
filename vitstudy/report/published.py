"""The executed notebooks a reader opens without running anything: cleaned of what changes on every run.

The report keeps each executed notebook (tables as HTML, figures as PNG, printed text) under ``notebooks/`` of its
output folder. Before publishing, :func:`clean_notebook` removes what differs between two runs of unchanged code
and what no static viewer can show: papermill's and nbclient's timestamps and durations, random cell ids (numbered
instead), live widget views and their saved state (a widget's static figure and readout stay, as the cells print
them), and the progress lines the runner forwards to the terminal. Re-running without changes then gives a diff
of the measured numbers only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat

from .. import progress
from ..files import atomic_write_text

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
VOLATILE_CELL_METADATA = ("papermill", "execution", "collapsed", "scrolled")


def clean_notebook(notebook: Any) -> Any:
    """``notebook`` (an nbformat node) without run-to-run noise; edited in place and returned."""
    notebook.metadata.pop("papermill", None)
    notebook.metadata.pop("widgets", None)
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:02d}"
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = [kept for output in cell.outputs if (kept := _clean_output(output)) is not None]
    return notebook


def _clean_output(output: Any) -> Any | None:
    """One output without widget views and progress lines; None when nothing a reader can see is left."""
    if output.get("output_type") == "stream":
        lines = [line for line in output.text.splitlines(keepends=True) if not line.startswith(progress.MARK)]
        output.text = "".join(lines)
        return output if output.text.strip() else None
    data = output.get("data")
    if data is not None and WIDGET_VIEW in data:
        return None  # a live widget: its text/plain is only the widget's repr; its figure is a separate output
    output.get("metadata", {}).pop("execution", None)
    return output


def publish_notebook(executed: Path, target: Path) -> Path:
    """Write the cleaned copy of the executed notebook ``executed`` to ``target`` atomically."""
    notebook = clean_notebook(nbformat.read(executed, as_version=4))
    atomic_write_text(target, nbformat.writes(notebook) + "\n")
    return target
