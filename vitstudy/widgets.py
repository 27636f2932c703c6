"""Widgets whose callback errors are not swallowed.

``ipywidgets.interactive`` catches every exception in its callback and only prints it, so a broken widget
passes every headless notebook runner. ``checked_interactive`` records them: the cell that builds the widget
raises the first one, and ``raise_callback_errors`` does the same after a test or notebook moves a slider.

An explorer's move should feel attached to the control, so its figure is a :class:`LiveFigure`, drawn once and
then updated by blitting only what moves (texts pasted from :class:`TextStamps`), and its widget a
:class:`QuietInteractive`, which sends the browser nothing but the new figure and readout.
"""

from __future__ import annotations

import contextlib
import functools
import html
import io
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import PIL.Image
import torch
from IPython import get_ipython
from IPython.display import Image, display
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.text import Text

from .plots import prediction_grid
from .threads import SWITCH_ENV


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


class TextStamps:
    """Texts rasterised once per look and pasted as small images after: laying out and rasterising glyphs is most
    of what drawing a figure full of short labels costs, and an explorer shows the same labels again and again.

    A stamp is the text drawn alone, where the figure has it, on a transparent scratch canvas, cut to its extent;
    it is kept by the text's looks and by where its anchor falls inside a pixel (which decides how each line's
    position rounds), so pasting it where the same text sits again, whole pixels away, gives the pixels drawing it
    there would give. The most recently used stamps are kept, up to ``kept_bytes`` of pixels (a label is a few
    kilobytes, a figure's title line a few tens). A text that wraps (its lines depend on where it stands), or has a
    box or path effects, is drawn as usual."""

    def __init__(self, kept_bytes: int = 16 * 2**20) -> None:
        self.kept_bytes, self._bytes = kept_bytes, 0
        self._stamps: OrderedDict[tuple, tuple[np.ndarray, int, int, float, float]] = OrderedDict()
        self._scratch: RendererAgg | None = None

    def draw(self, text: Text, renderer: RendererAgg) -> None:
        """Draw ``text`` on ``renderer`` (the figure's own) from its stamp, made on first use."""
        if not text.get_visible() or not text.get_text():
            return
        if text.get_wrap() or text.get_bbox_patch() is not None or text.get_path_effects():
            text.draw(renderer)
            return
        anchor = text.get_transform().transform(text.get_unitless_position())
        key = (
            text.get_text(),
            text.get_fontproperties(),
            to_rgba(text.get_color(), text.get_alpha()),
            text.get_horizontalalignment(),
            text.get_verticalalignment(),
            text.get_rotation(),
            text.get_linespacing(),
            text.get_antialiased(),
            renderer.dpi,
            *np.round(anchor % 1, 3),  # where the anchor falls inside a pixel decides how each line's pixels round
        )
        if key in self._stamps:
            self._stamps.move_to_end(key)
        else:
            self._stamps[key] = self._stamp(text, renderer, anchor)
            self._bytes += self._stamps[key][0].nbytes
            while self._bytes > self.kept_bytes and len(self._stamps) > 1:
                self._bytes -= self._stamps.popitem(last=False)[1][0].nbytes
        pixels, left, bottom, anchor_x, anchor_y = self._stamps[key]
        gc = renderer.new_gc()
        if text.get_clip_on() and text.clipbox is not None:
            gc.set_clip_rectangle(text.clipbox)
        shift_x, shift_y = round(anchor[0] - anchor_x), round(anchor[1] - anchor_y)  # whole pixels
        renderer.draw_image(gc, left + shift_x, bottom + shift_y, pixels)
        gc.restore()

    def _stamp(
        self, text: Text, renderer: RendererAgg, anchor: np.ndarray
    ) -> tuple[np.ndarray, int, int, float, float]:
        """``text`` drawn alone where it stands: its pixels (RGBA, rows bottom up), their lower left corner on the
        canvas and the anchor they were drawn at."""
        width, height = int(renderer.width), int(renderer.height)
        if self._scratch is None or (self._scratch.width, self._scratch.height, self._scratch.dpi) != (
            width,
            height,
            renderer.dpi,
        ):
            self._scratch = RendererAgg(width, height, renderer.dpi)
        scratch = self._scratch
        scratch.clear()
        text.draw(scratch)
        extent = text.get_window_extent(scratch)
        left, bottom = max(int(np.floor(extent.x0)) - 2, 0), max(int(np.floor(extent.y0)) - 2, 0)
        right, top = min(int(np.ceil(extent.x1)) + 2, width), min(int(np.ceil(extent.y1)) + 2, height)
        # rows bottom up, as Agg's draw_image takes them
        pixels = np.asarray(scratch.buffer_rgba())[height - top : height - bottom, left:right][::-1].copy()
        return pixels, left, bottom, float(anchor[0]), float(anchor[1])


class LiveFigure(Figure):
    """A figure an explorer keeps for a layout and redraws in place on every move (:func:`live_figure`).

    :meth:`png` renders a move by blitting: everything but the drawing's moving artists (:attr:`moving`, set by
    :class:`LiveDrawings` from the drawing's ``moving_artists``) is drawn once and kept as a background picture;
    a move restores it, draws only the moving artists over it in their order (texts from :class:`TextStamps`) and
    encodes the canvas. A static artist that a full draw puts over a moving one where they overlap is listed as
    moving too, after it (as the exit histogram's grid lines and frame are, over its bars). What does not move may
    depend on a few settings (the exit histogram's ticks on the exit set): the drawing's ``background_key()``
    (:attr:`background_key`) names them, and one background is kept per key. A drawing that changes what does not
    move otherwise calls :func:`redraw_background`. Saving the figure (``savefig``, :func:`figure_png`) still draws
    everything."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.moving: Callable[[], Sequence[Artist]] | None = None
        self.background_key: Callable[[], Any] | None = None
        self.backgrounds: dict[Any, Any] = {}
        self.stamps = TextStamps()

    def png(self) -> bytes:
        """The figure as PNG bytes at :data:`WIDGET_DPI`, as :func:`figure_png` gives it (up to a few levels of
        blending where a text is pasted), redrawing only the moving artists over the kept background."""
        if self.moving is None:
            return figure_png(self)
        canvas, moving = self.canvas, list(self.moving())
        key = self.background_key() if self.background_key is not None else None
        background = self.backgrounds.get(key)
        if background is not None and background.get_extents()[2:] != canvas.get_width_height():
            self.backgrounds.clear()  # resized since: the kept pictures no longer cover the canvas
            background = None
        if background is None:
            shown = [artist for artist in moving if artist.get_visible()]
            for artist in shown:
                artist.set_visible(False)
            try:
                canvas.draw()
            finally:
                for artist in shown:
                    artist.set_visible(True)
            self.backgrounds[key] = canvas.copy_from_bbox(self.bbox)
        else:
            canvas.restore_region(background)
        renderer = canvas.get_renderer()
        for artist in moving:
            if isinstance(artist, Text):
                self.stamps.draw(artist, renderer)
            else:
                artist.draw(renderer)
        return rgba_png(np.asarray(canvas.buffer_rgba()))


def redraw_background(fig: Figure) -> None:
    """Tell a :class:`LiveFigure` that what does not move has changed, so that its next :meth:`~LiveFigure.png`
    draws a new background (no-op for any other figure)."""
    if isinstance(fig, LiveFigure):
        fig.backgrounds.clear()


def rgba_png(pixels: np.ndarray) -> bytes:
    """RGBA pixels [H, W, 4] as PNG bytes, encoded as :func:`figure_png` encodes a figure."""
    png = io.BytesIO()
    PIL.Image.fromarray(pixels, "RGBA").save(png, format="png", **PNG_ENCODING)
    return png.getvalue()


def live_figure() -> LiveFigure:
    """A figure an explorer keeps for a layout and redraws in place on every move, at :data:`WIDGET_DPI` on its own
    Agg canvas, outside pyplot: pyplot would hold it open, and under ``%matplotlib inline`` show it again under the
    next cell that runs. Its drawing sets its size and places its axes by hand (no layout engine, whose measuring
    draw would double every move's render)."""
    fig = LiveFigure(dpi=WIDGET_DPI)
    FigureCanvasAgg(fig)
    return fig


class LiveDrawings:
    """An explorer's drawings, one per key (a layout, or the bad-setting message), each made on its own
    :func:`live_figure` the first time its key is asked for and redrawn in place after. A drawing with a
    ``moving_artists()`` method (what a move changes, in drawing order) is rendered by blitting
    (:meth:`LiveFigure.png`), over one background per ``background_key()`` if it has that method."""

    def __init__(self) -> None:
        self._drawings: dict[Any, Any] = {}

    def get(self, key: Any, make: Callable[[Figure], Any]) -> Any:
        """The drawing for ``key``, made by ``make(live_figure())`` on first use."""
        if key not in self._drawings:
            fig = live_figure()
            drawing = self._drawings[key] = make(fig)
            fig.moving = getattr(drawing, "moving_artists", None)
            fig.background_key = getattr(drawing, "background_key", None)
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


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run an explorer move's torch work on one thread, then give torch its thread count back.

    A move's tensors are small (one image through the model, a test set's logits), so one thread computes them
    about as fast as several; and the browser needs a core at the same moment to show the previous move. A team of
    OpenMP threads short of a core waits at every barrier: a forward that takes 15 ms alone can then take a second.
    Under ``OMP_NUM_THREADS`` or ``VITSTUDY_SHARE_CORES=0`` torch's setting is left alone, as
    :func:`vitstudy.threads.share_cores` leaves it."""
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get(SWITCH_ENV) == "0":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
    every move on one :func:`live_figure`, rendered by blitting (:meth:`LiveFigure.png`); a figure it makes through
    pyplot is rendered whole and closed. ``view`` runs on one torch thread (:func:`one_torch_thread`). The widget is
    a :class:`QuietInteractive`. After a
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
            with one_torch_thread():
                result = view(**values)
        except Exception:
            sentences.value = data.value = ""  # no stale readout beside a traceback
            figure.layout.display = "none"  # nor a stale figure
            raise
        figure.value = result.figure.png() if isinstance(result.figure, LiveFigure) else figure_png(result.figure)
        plt.close(result.figure)  # a no-op for a live figure, which pyplot does not hold
        figure.layout.display = None  # shown again after a failed move (the widget clears its traceback)
        sentences.value = f"<p>{html.escape(readout(result.summary))}</p>"
        data.value = html.escape(readout_data(result.summary))
        return result

    functools.update_wrapper(shown, view)
    for name, control in controls.items():
        control.description = control.description or name  # as interactive names them, but before measuring
    label_controls(list(controls.values()))
    widget = checked_interactive(
        shown, show=show, after=(figure, sentences, data), interactive=QuietInteractive, **controls
    )
    widget.figure, widget.readout, widget.readout_data = figure, sentences, data
    return widget


def label_controls(controls: Sequence[ipywidgets.Widget]) -> None:
    """Give every control one label width that fits the longest label (in ``ch``, the width of a digit, with room
    for wider letters) and :data:`CONTROL_WIDTH`: ipywidgets' default label width cuts longer labels."""
    longest = max((len(c.description) for c in controls), default=0)
    for control in controls:
        control.style.description_width = f"{longest + 3}ch"
        control.layout.width = CONTROL_WIDTH


class QuietInteractive(ipywidgets.interactive):
    """``ipywidgets.interactive`` whose moves touch its output area only to show a callback's traceback, and to clear
    it at the next good move, for a callback that shows its results in widgets of its own (the explorers).

    ``interactive`` enters its output area on every move (two updates of its ``msg_id`` and four flushes of the
    kernel's streams) and clears it (one more message and two more flushes), each a message the browser handles
    before the view is current; a good move of an explorer sends none of them."""

    def update(self, *args: Any) -> None:
        """Call the function with the controls' values (``args``: the change, ignored, as ``interactive``'s)."""
        self.kwargs = {widget._kwarg: widget.get_interact_value() for widget in self.kwargs_widgets}
        try:
            self.result = self.f(**self.kwargs)
        except Exception as err:
            with self.out:
                self.out.clear_output(wait=True)
                shell = get_ipython()
                if shell is None:
                    self.log.warning("Exception in interact callback: %s", err, exc_info=True)
                else:
                    shell.showtraceback()
            self.failed = True
        else:
            if getattr(self, "failed", False):
                self.out.clear_output()
                self.failed = False


def checked_interactive(
    fn: Callable[..., Any],
    show: bool = True,
    after: Sequence[ipywidgets.Widget] = (),
    interactive: type[ipywidgets.interactive] = ipywidgets.interactive,
    **widgets: Any,
) -> ipywidgets.interactive:
    """``interactive(fn, **widgets)`` (``ipywidgets.interactive`` or a subclass such as :class:`QuietInteractive`)
    that re-raises its callback's first exception in this cell; ``after``: widgets shown under its output area."""
    errors: list[BaseException] = []

    @functools.wraps(fn)
    def recorded(**kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as err:
            errors.append(err)
            raise  # interactive still shows the traceback in its output area

    widget = interactive(recorded, **widgets)  # calls `recorded` once with the initial values
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
