"""Widgets whose callback errors are not swallowed.

``ipywidgets.interactive`` catches every exception in its callback and only prints it, so a broken widget
passes every headless notebook runner. ``checked_interactive`` records them: the cell that builds the widget
raises the first one, and ``raise_callback_errors`` does the same after a test or notebook moves a slider.
"""

from __future__ import annotations

import functools
import html
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets
import matplotlib.pyplot as plt
from IPython.display import Image, clear_output, display
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .plots import prediction_grid


class WidgetCallbackError(RuntimeError):
    """A widget callback raised; the original exception is the cause."""


@dataclass
class ExplorerView:
    """What an explorer shows for one setting of its controls, computed without a browser.

    Both methods' ``explore()`` return this: ``summary`` holds the numbers the view states (a flat dict),
    ``figure`` the drawing, ``details`` what they were computed from (multi-exit: the ``Simulation``;
    SkipViT: the per-stage ``Stage`` traces). ``explore()`` draws each view on a figure of its own; an explorer
    widget's views share its live figure (:func:`live_figure`), which shows the latest move.
    """

    summary: dict[str, Any]
    figure: Figure
    details: Any = None

    def _repr_png_(self) -> bytes:
        """A view as the last expression of a cell shows its figure as a PNG in any frontend, whatever matplotlib
        backend the kernel runs (under Agg a bare Figure shows only its repr)."""
        return figure_png(self.figure)


WIDGET_DPI = 100  # the inline backend's resolution
# zlib's fastest level: a widget's PNG is encoded on every move and sent a few centimetres, so encoding time counts
# and a few more bytes do not
PNG_ENCODING = {"compress_level": 1}


def live_figure() -> Figure:
    """A figure an explorer keeps for a layout and redraws in place on every move, at :data:`WIDGET_DPI` on its own
    Agg canvas, outside pyplot: pyplot would hold it open, and under ``%matplotlib inline`` show it again under the
    next cell that runs. Its drawing sets its size and places its axes by hand (no layout engine, whose measuring
    draw would double every move's render)."""
    fig = Figure(dpi=WIDGET_DPI)
    FigureCanvasAgg(fig)
    return fig


class LiveDrawings:
    """An explorer's drawings, one per key (a layout, or the bad-setting message), each made on its own
    :func:`live_figure` the first time its key is asked for and redrawn in place after."""

    def __init__(self) -> None:
        self._drawings: dict[Any, Any] = {}

    def get(self, key: Any, make: Callable[[Figure], Any]) -> Any:
        """The drawing for ``key``, made by ``make(live_figure())`` on first use."""
        if key not in self._drawings:
            self._drawings[key] = make(live_figure())
        return self._drawings[key]


def show_and_close(fig: Figure, show: bool = True) -> None:
    """Display a widget callback's figure as a PNG, then close it: pyplot keeps every open figure, and a slider
    session would pile them up (and show each twice under ``%matplotlib inline``).

    The PNG is rendered here rather than by ``display(fig)``: a kernel that never ran ``%matplotlib inline`` has no
    image formatter for figures, and JupyterLab then shows only the text ``<Figure size ...>``."""
    if show:
        display(Image(data=figure_png(fig), format="png"))
    plt.close(fig)


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes at :data:`WIDGET_DPI`, as a widget shows it.

    No ``bbox_inches="tight"``: figures from ``plots.new_figure`` already fit their canvas (constrained layout, or
    axes placed by hand), and "tight" measures the whole figure in one more draw, which a slider move waits for."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=WIDGET_DPI, pil_kwargs=PNG_ENCODING)
    return png.getvalue()


FIGURE_CLASS = "vitstudy-figure"  # the image widget an explorer draws its figure into
READOUT_CLASS = "vitstudy-readout"  # the sentences under an explorer's figure
READOUT_DATA_CLASS = "vitstudy-readout-data"  # the hidden element holding the summary as JSON
CONTROL_WIDTH = "34em"  # the longest label in full plus a slider track long enough to aim at a value


def readout_data(summary: dict[str, Any]) -> str:
    """An explorer's summary as JSON, for machines (the browser tests) rather than people.

    Floats are rounded to 6 decimals: the view states none finer, and two runs of one setting then give the same
    text even if a float's last bits differ."""

    def rounded(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, 6)
        if isinstance(value, list | tuple):
            return [rounded(v) for v in value]
        return value

    return json.dumps({key: rounded(value) for key, value in summary.items()})


def explorer_interactive(
    view: Callable[..., ExplorerView], readout: Callable[[dict[str, Any]], str], show: bool = True, **controls: Any
) -> ipywidgets.interactive:
    """An explorer widget: ``controls`` drive ``view``; each move shows the new figure, ``readout(summary)`` under
    it, and returns its :class:`ExplorerView` as ``widget.result`` (callback errors raised, as
    ``checked_interactive`` does).

    The figure goes as PNG bytes into one image widget, ``widget.figure`` (class :data:`FIGURE_CLASS`), kept for
    the widget's life: a move replaces its bytes in place rather than displaying a new output. ``view`` may draw
    every move on one :func:`live_figure`; a figure it makes through pyplot is closed once rendered. After a
    callback error the figure is hidden under the traceback, and the next good move shows it and clears the
    traceback. ``widget.readout`` shows the sentences (class :data:`READOUT_CLASS`); ``widget.readout_data`` is
    hidden and holds :func:`readout_data` of the summary (class :data:`READOUT_DATA_CLASS`), which the browser
    tests read. Every control gets one label width that fits the longest label, so none is cut."""
    figure = ipywidgets.Image(format="png")
    figure.add_class(FIGURE_CLASS)
    sentences = ipywidgets.HTML()
    sentences.add_class(READOUT_CLASS)
    data = ipywidgets.HTML(layout=ipywidgets.Layout(display="none"))
    data.add_class(READOUT_DATA_CLASS)

    def shown(**values: Any) -> ExplorerView:
        try:
            result = view(**values)
        except Exception:
            sentences.value = data.value = ""  # no stale readout beside a traceback
            figure.layout.display = "none"  # nor a stale figure
            raise
        figure.value = figure_png(result.figure)
        plt.close(result.figure)  # a no-op for a live figure, which pyplot does not hold
        if figure.layout.display == "none":  # the previous move failed: its traceback is still in the output area
            clear_output()
            figure.layout.display = None
        sentences.value = f"<p>{html.escape(readout(result.summary))}</p>"
        data.value = html.escape(readout_data(result.summary))
        return result

    functools.update_wrapper(shown, view)
    for name, control in controls.items():
        control.description = control.description or name  # as interactive names them, but before measuring
    label_controls(list(controls.values()))
    widget = checked_interactive(shown, show=show, after=(figure, sentences, data), **controls)
    widget.figure, widget.readout, widget.readout_data = figure, sentences, data
    return widget


def label_controls(controls: Sequence[ipywidgets.Widget]) -> None:
    """Give every control one label width that fits the longest label (in ``ch``, the width of a digit, with room
    for wider letters) and :data:`CONTROL_WIDTH`: ipywidgets' default label width cuts longer labels."""
    longest = max((len(c.description) for c in controls), default=0)
    for control in controls:
        control.style.description_width = f"{longest + 3}ch"
        control.layout.width = CONTROL_WIDTH


def checked_interactive(
    fn: Callable[..., Any], show: bool = True, after: Sequence[ipywidgets.Widget] = (), **widgets: Any
) -> ipywidgets.interactive:
    """``ipywidgets.interactive(fn, **widgets)`` that re-raises its callback's first exception in this cell;
    ``after``: widgets shown under its output area."""
    errors: list[BaseException] = []

    @functools.wraps(fn)
    def recorded(**kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as err:
            errors.append(err)
            raise  # interactive still shows the traceback in its output area

    widget = ipywidgets.interactive(recorded, **widgets)  # calls `recorded` once with the initial values
    widget.callback_errors = errors
    widget.children = (*widget.children, *after)
    if show:
        display(widget)
    raise_callback_errors(widget)
    return widget


def raise_callback_errors(widget: ipywidgets.interactive) -> None:
    """Raise the first exception recorded by a ``checked_interactive`` callback, then forget them."""
    errors = getattr(widget, "callback_errors", [])
    if errors:
        first = errors[0]
        errors.clear()
        raise WidgetCallbackError(f"widget callback raised {type(first).__name__}: {first}") from first


def set_controls(widget: ipywidgets.interactive, values: Mapping[str, Any]) -> Any:
    """Move controls by keyword name, as a user would, and return the callback's result (raising its errors)."""
    controls = {getattr(child, "_kwarg", None): child for child in widget.kwargs_widgets}
    for name, value in values.items():
        if name not in controls:
            raise ValueError(f"widget has no control {name!r}: it has {sorted(k for k in controls if k)}")
        controls[name].value = value
    raise_callback_errors(widget)
    return widget.result


# ----------------------------------------------------------------------------------------------------------
# Browsers built on the plot functions


def prediction_browser(
    dataset: Any, predictions: Any, targets: Any, classes: Any, count: int = 24, show: bool = True
) -> ipywidgets.interactive:
    """Page through a data set's predictions ``count`` images at a time, or only through the mistakes.

    Titles read "predicted (true)", mistakes in red (``plots.prediction_grid``); ``widget.result`` is the page
    shown. Arguments as ``prediction_grid``'s: a dataset of (image, label), predicted and true class indices.
    """

    def page(start: int, only_errors: bool) -> Figure:
        fig = prediction_grid(dataset, predictions, targets, classes, start, count, only_errors)
        show_and_close(fig, show)
        return fig

    return checked_interactive(
        page,
        show=show,
        start=ipywidgets.IntSlider(0, 0, max(0, len(targets) - count), count, description="first image"),
        only_errors=ipywidgets.Checkbox(False, description="only mistakes"),
    )
