"""Widgets whose callback errors are not swallowed.

``ipywidgets.interactive`` catches every exception in its callback and only prints it, so a broken widget
passes every headless notebook runner. ``checked_interactive`` records them: the cell that builds the widget
raises the first one, and ``raise_callback_errors`` does the same after a test or notebook moves a slider.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets
import matplotlib.pyplot as plt
from IPython.display import Image, display
from matplotlib.figure import Figure

from .plots import prediction_grid


class WidgetCallbackError(RuntimeError):
    """A widget callback raised; the original exception is the cause."""


@dataclass
class ExplorerView:
    """What an explorer shows for one setting of its controls, computed without a browser.

    Both methods' ``explore()`` return this: ``summary`` holds the numbers the view states (a flat dict),
    ``figure`` the drawing, ``details`` what they were computed from (multi-exit: the ``Simulation``;
    SkipViT: the per-stage ``Stage`` traces).
    """

    summary: dict[str, Any]
    figure: Figure
    details: Any = None


WIDGET_DPI = 100  # the inline backend's resolution


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
    fig.savefig(png, format="png", dpi=WIDGET_DPI)
    return png.getvalue()


READOUT_TITLE = "explorer readout"


def summary_text(summary: dict[str, Any]) -> str:
    """An explorer's summary as text, one ``key: value`` line each under :data:`READOUT_TITLE`: floats with four
    decimals, lists comma-separated, lists of lists (one per stage) separated by `` | ``."""

    def readable(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        if isinstance(value, list | tuple):
            inner = [readable(v) for v in value]
            return " | ".join(inner) if value and isinstance(value[0], list | tuple) else ", ".join(inner)
        return str(value)

    return "\n".join([READOUT_TITLE, *(f"{key}: {readable(value)}" for key, value in summary.items())])


def explorer_interactive(
    view: Callable[..., ExplorerView], show: bool = True, **controls: Any
) -> ipywidgets.interactive:
    """An explorer widget: ``controls`` drive ``view``; each move shows the new figure and returns its
    :class:`ExplorerView` as ``widget.result`` (callback errors raised, as ``checked_interactive`` does)."""

    def shown(**values: Any) -> ExplorerView:
        result = view(**values)
        show_and_close(result.figure, show)
        if show:  # the numbers as text under the figure: readable, copyable, checked by the browser tests
            print(summary_text(result.summary))
        return result

    functools.update_wrapper(shown, view)
    return checked_interactive(shown, show=show, **controls)


def checked_interactive(fn: Callable[..., Any], show: bool = True, **widgets: Any) -> ipywidgets.interactive:
    """``ipywidgets.interactive(fn, **widgets)`` that re-raises its callback's first exception in this cell."""
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
