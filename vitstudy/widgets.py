"""Widgets whose callback errors are not swallowed.

``ipywidgets.interactive`` catches every exception in its callback and only prints it, so a broken widget
passes every headless notebook runner. ``checked_interactive`` records them: the cell that builds the widget
raises the first one, and ``raise_callback_errors`` does the same after a test or notebook moves a slider.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets
from IPython.display import display


class WidgetCallbackError(RuntimeError):
    """A widget callback raised; the original exception is the cause."""


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
