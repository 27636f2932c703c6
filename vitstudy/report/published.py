"""The executed notebooks a reader opens without running anything: cleaned of what changes on every run.

The report keeps each executed notebook (tables as HTML, figures as PNG, printed text) under ``notebooks/`` of its
output folder. Before publishing, :func:`clean_notebook` removes what differs between two runs of unchanged code
and what no static viewer can show: papermill's and nbclient's timestamps and durations, random cell ids (numbered
instead), live widget views and their saved state (a widget's static figure and readout stay, as the cells print
them), the progress lines the runner forwards to the terminal, and the text stand-in (``<Figure size ...>``) beside a
figure's PNG. Re-running without changes then gives a diff of the measured numbers only.

A published notebook shows what its source ran: :func:`code_differences` names where its code cells and the
source's (``notebooks/NN_name.py``, as jupytext reads it) part, so a source changed without re-running the report
is caught.
"""

from __future__ import annotations

import re
from itertools import zip_longest
from pathlib import Path
from typing import Any

import jupytext
import nbformat

from .. import progress
from ..files import atomic_write_text

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
VOLATILE_CELL_METADATA = ("papermill", "execution", "collapsed", "scrolled")
# matplotlib's repr of a Figure: all a figure shows when no image formatter rendered it, the text/plain stand-in
# beside its PNG when one did.
FIGURE_REPR = re.compile(r"<Figure size \d+x\d+ with \d+ Axes>")
INJECTED_PARAMETERS = "injected-parameters"  # the tag of the cell papermill adds after the parameters cell


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
    if data is not None and "image/png" in data and FIGURE_REPR.fullmatch(data.get("text/plain", "")):
        del data["text/plain"]  # every viewer shows the PNG; the repr only names the figure's size
    return output


def is_figure_repr(output: Any) -> bool:
    """Whether ``output`` shows a matplotlib figure as its text repr only, without an image."""
    data = output.get("data", {})
    return "image/png" not in data and bool(FIGURE_REPR.fullmatch(data.get("text/plain", "")))


def executed_code(notebook: Any) -> list[str]:
    """The sources of ``notebook``'s code cells, papermill's injected parameters cell left out: the code a run of
    the source notebook executes."""
    return [
        cell.source
        for cell in notebook.cells
        if cell.cell_type == "code" and INJECTED_PARAMETERS not in cell.metadata.get("tags", [])
    ]


def code_differences(published: Any, source: Path) -> list[str]:
    """Where the code cells of the published notebook ``published`` (an nbformat node) and of the source notebook
    ``source`` (jupytext) differ, one line each naming the code cell; empty when they run the same code."""
    ran, current = executed_code(published), executed_code(jupytext.read(source))
    differences = [
        f"code cell {number}: {_first_difference(was, now)} in {source.name}"
        for number, (was, now) in enumerate(zip(ran, current, strict=False), start=1)
        if was != now
    ]
    if len(ran) != len(current):
        differences.append(f"{len(ran)} code cells published, {len(current)} in {source.name}")
    return differences


def _first_difference(published: str, source: str) -> str:
    """The first line where two cell sources differ, as ``'published line' published, 'source line'``."""
    pairs = zip_longest(published.splitlines(), source.splitlines(), fillvalue="")
    was, now = next(((a, b) for a, b in pairs if a != b), (published, source))
    return f"{was.strip()!r} published, {now.strip()!r}"


def publish_notebook(executed: Path, target: Path) -> Path:
    """Write the cleaned copy of the executed notebook ``executed`` to ``target`` atomically."""
    notebook = clean_notebook(nbformat.read(executed, as_version=4))
    atomic_write_text(target, nbformat.writes(notebook) + "\n")
    return target
