import html
import json

import ipywidgets
import pytest

from vitstudy.widgets import WidgetCallbackError, checked_interactive, raise_callback_errors, set_controls


def _square(x: int) -> int:
    if x == 3:
        raise ZeroDivisionError("three is not allowed here")
    return x * x


def test_first_call_error_is_raised_in_the_cell():
    """An exception in the initial callback is raised where the widget is built, not swallowed."""
    with pytest.raises(WidgetCallbackError, match="three is not allowed"):
        checked_interactive(_square, show=False, x=ipywidgets.IntSlider(3, 0, 5))


def test_moving_a_control_returns_the_result():
    """set_controls moves a slider like a user and returns the callback's result."""
    widget = checked_interactive(_square, show=False, x=ipywidgets.IntSlider(1, 0, 5))
    assert set_controls(widget, {"x": 4}) == 16


def test_error_after_moving_a_control_is_raised():
    """A callback error caused by moving a slider is raised by set_controls."""
    widget = checked_interactive(_square, show=False, x=ipywidgets.IntSlider(1, 0, 5))
    with pytest.raises(WidgetCallbackError) as caught:
        set_controls(widget, {"x": 3})
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_errors_are_raised_once():
    """After raising, the recorded errors are cleared so the next check starts clean."""
    widget = checked_interactive(_square, show=False, x=ipywidgets.IntSlider(1, 0, 5))
    widget.children[0].value = 3
    with pytest.raises(WidgetCallbackError):
        raise_callback_errors(widget)
    raise_callback_errors(widget)


def test_unknown_control_is_named():
    """Moving a control the widget does not have names it and the ones it has."""
    widget = checked_interactive(_square, show=False, x=ipywidgets.IntSlider(1, 0, 5))
    with pytest.raises(ValueError, match=r"no control 'y'.*\['x'\]"):
        set_controls(widget, {"y": 1})


def _predictions():
    """Ten 8x8 images of classes 0/1; images 2, 5 and 7 are predicted wrong."""
    import numpy as np
    import torch

    targets = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    predictions = targets.copy()
    predictions[[2, 5, 7]] = 1 - predictions[[2, 5, 7]]
    dataset = [(torch.rand(1, 8, 8), int(t)) for t in targets]
    return dataset, predictions, targets, ("zero", "one")


def _titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_prediction_browser_pages_through_predictions():
    """The browser shows `count` images from `start`, titled "predicted (true)"."""
    from vitstudy.widgets import prediction_browser

    dataset, predictions, targets, classes = _predictions()
    browser = prediction_browser(dataset, predictions, targets, classes, count=4, show=False)
    assert _titles(browser.result) == ["zero\n(zero)", "one\n(one)", "one\n(zero)", "one\n(one)"]
    second_page = ["zero\n(zero)", "zero\n(one)", "zero\n(zero)", "zero\n(one)"]
    assert _titles(set_controls(browser, {"start": 4})) == second_page


def test_prediction_browser_shows_only_mistakes():
    """With "only mistakes" ticked, every image shown is a wrong prediction, titled in red."""
    from vitstudy.widgets import prediction_browser

    dataset, predictions, targets, classes = _predictions()
    browser = prediction_browser(dataset, predictions, targets, classes, count=4, show=False)
    fig = set_controls(browser, {"only_errors": True, "start": 0})
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert [t.get_text() for t in titles] == ["one\n(zero)", "zero\n(one)", "zero\n(one)"]
    assert {t.get_color() for t in titles} == {"tab:red"}


def test_readout_data_is_the_summary_as_json():
    """The hidden readout holds the summary as JSON: lists kept, floats rounded to 6 decimals, None as null."""
    from vitstudy.widgets import readout_data

    text = readout_data({"top1": 80.49123456, "kept_per_stage": [35, 25], "greyed": [[1, 2], [3]], "label": None})
    assert json.loads(text) == {"top1": 80.491235, "kept_per_stage": [35, 25], "greyed": [[1, 2], [3]], "label": None}


def _square_view(x: int):
    from vitstudy.plots import new_figure
    from vitstudy.widgets import ExplorerView

    return ExplorerView({"x": x, "square": x * x}, new_figure((1, 1)))


def _square_readout(summary: dict) -> str:
    return f"{summary['x']} squared is {summary['square']} & more."


def test_explorer_shows_the_readout_sentences_under_the_figure():
    """After a move the explorer's readout shows the view's sentences (HTML-escaped), after its output area."""
    from vitstudy.widgets import READOUT_CLASS, explorer_interactive

    widget = explorer_interactive(_square_view, _square_readout, show=False, x=ipywidgets.IntSlider(2, 0, 5))
    set_controls(widget, {"x": 4})
    assert widget.readout.value == "<p>4 squared is 16 &amp; more.</p>"
    assert READOUT_CLASS in widget.readout._dom_classes and widget.children.index(widget.readout) > 1


def test_explorer_keeps_the_summary_json_in_a_hidden_element():
    """The explorer's data element is hidden, carries its CSS class and holds readout_data of the shown view."""
    from vitstudy.widgets import READOUT_DATA_CLASS, explorer_interactive, readout_data

    widget = explorer_interactive(_square_view, _square_readout, show=False, x=ipywidgets.IntSlider(2, 0, 5))
    view = set_controls(widget, {"x": 3})
    data, shown = widget.readout_data, html.unescape(widget.readout_data.value)
    assert shown == readout_data(view.summary) and json.loads(shown)["square"] == 9
    assert data.layout.display == "none" and READOUT_DATA_CLASS in data._dom_classes


def test_explorer_labels_share_a_width_that_fits_the_longest():
    """Every explorer control gets one label width, in ch, longer than the longest label (default-named ones too)."""
    from vitstudy.widgets import explorer_interactive

    def view(x: int, second_value: int):
        return _square_view(x)

    widget = explorer_interactive(
        view,
        _square_readout,
        show=False,
        x=ipywidgets.IntSlider(2, 0, 5),
        second_value=ipywidgets.IntSlider(0, 0, 5, description="2nd drop (0=none)"),
    )
    widths = {c.style.description_width for c in widget.kwargs_widgets}
    assert widths == {f"{len('2nd drop (0=none)') + 3}ch"} and widget.kwargs_widgets[0].description == "x"


def test_widget_figures_are_shown_as_png_whatever_the_backend(monkeypatch):
    """A kernel without ``%matplotlib inline`` has no figure formatter: the figure is displayed as PNG bytes."""
    from IPython.display import Image

    from vitstudy import widgets
    from vitstudy.plots import new_figure

    shown = []
    monkeypatch.setattr(widgets, "display", shown.append)
    widgets.show_and_close(new_figure((2, 2)))
    assert isinstance(shown[0], Image) and shown[0].data.startswith(b"\x89PNG")


def test_explorer_view_shows_as_its_figure():
    """An ExplorerView as a cell's last expression renders as its figure's PNG."""
    import matplotlib.pyplot as plt

    from vitstudy.widgets import ExplorerView

    fig = plt.figure(figsize=(1, 1))
    try:
        assert ExplorerView({}, fig)._repr_png_().startswith(b"\x89PNG")
    finally:
        plt.close(fig)


def _new_square_view(x: int):
    """A view on a new pyplot figure each call, as ``explore()`` makes them, showing ``x``."""
    view = _square_view(x)
    view.figure.text(0.5, 0.5, str(x))
    return view


def test_explorer_puts_each_moves_figure_into_one_image_widget():
    """A move replaces the PNG bytes of the one image widget, between the controls and the readout."""
    from vitstudy.widgets import FIGURE_CLASS, explorer_interactive

    widget = explorer_interactive(_new_square_view, _square_readout, show=False, x=ipywidgets.IntSlider(2, 0, 5))
    figure, first = widget.figure, bytes(widget.figure.value)
    set_controls(widget, {"x": 4})
    assert widget.figure is figure and bytes(figure.value) != first
    assert first.startswith(b"\x89PNG") and bytes(figure.value).startswith(b"\x89PNG")
    assert FIGURE_CLASS in figure._dom_classes and widget.children.index(figure) < widget.children.index(widget.readout)


def test_explorer_closes_the_pyplot_figures_it_rendered():
    """A view drawn on a new pyplot figure is closed once rendered: a slider session piles none up."""
    import matplotlib.pyplot as plt

    from vitstudy.widgets import explorer_interactive

    open_before = len(plt.get_fignums())
    widget = explorer_interactive(_new_square_view, _square_readout, show=False, x=ipywidgets.IntSlider(2, 0, 5))
    for x in (3, 4, 5):
        set_controls(widget, {"x": x})
    assert len(plt.get_fignums()) == open_before


def test_explorer_hides_the_figure_under_an_error_and_shows_it_again():
    """A failing move hides the stale figure and empties the readout; the next good move shows both again."""
    from vitstudy.widgets import explorer_interactive

    def view(x: int):
        return _square_view(_square(x))

    widget = explorer_interactive(view, _square_readout, show=False, x=ipywidgets.IntSlider(2, 0, 5))
    with pytest.raises(WidgetCallbackError):
        set_controls(widget, {"x": 3})
    assert widget.figure.layout.display == "none" and widget.readout.value == ""
    set_controls(widget, {"x": 4})
    assert widget.figure.layout.display is None and "16 squared" in widget.readout.value


def test_live_figure_is_outside_pyplot_at_the_widget_resolution():
    """A live figure is not pyplot's (no inline backend shows it again, none to close) and renders at WIDGET_DPI."""
    import matplotlib.pyplot as plt

    from vitstudy.widgets import WIDGET_DPI, figure_png, live_figure

    open_before = plt.get_fignums()
    fig = live_figure()
    fig.set_size_inches(2, 1)
    assert plt.get_fignums() == open_before and fig.dpi == WIDGET_DPI
    assert figure_png(fig)[16:24] == (200).to_bytes(4, "big") + (100).to_bytes(4, "big")  # PNG width, height


def _blitted_figure():
    """A live figure with a static label and a moving image and text, as an explorer's drawing declares them."""
    import numpy as np

    from vitstudy.widgets import live_figure

    fig = live_figure()
    fig.set_size_inches(3, 2)
    ax = fig.add_axes((0.2, 0.2, 0.6, 0.6))
    ax.set_axis_off()  # no frame drawn over the image: the moving artists are the topmost where they lie
    ax.set_title("a static label", fontsize=8, y=-0.2)
    image = ax.imshow(np.zeros((4, 4)), vmin=0, vmax=1, cmap="gray")
    text = fig.text(0.5, 0.92, "", ha="center", fontsize=8)
    fig.moving = lambda: [image, text]
    return fig, ax, image, text


def _close_pictures(shown: bytes, drawn: bytes) -> bool:
    import io

    import numpy as np
    from PIL import Image

    shown_pixels, drawn_pixels = (np.asarray(Image.open(io.BytesIO(png))).astype(int) for png in (shown, drawn))
    return shown_pixels.shape == drawn_pixels.shape and np.abs(shown_pixels - drawn_pixels).max() <= 8


@pytest.fixture
def drawn(monkeypatch) -> list[str]:
    """Every text Agg rasterises from now on, in order."""
    from matplotlib.backends.backend_agg import RendererAgg

    texts: list[str] = []
    draw_text = RendererAgg.draw_text
    monkeypatch.setattr(
        RendererAgg,
        "draw_text",
        lambda self, gc, x, y, s, *a, **k: texts.append(s) or draw_text(self, gc, x, y, s, *a, **k),
    )
    return texts


def test_live_figure_redraws_only_its_moving_artists_over_the_kept_background(drawn):
    """A live figure draws what does not move once; each move draws only the moving artists over it, and the PNG
    shows what savefig draws; after redraw_background the next move draws the background again."""
    import numpy as np

    from vitstudy.widgets import figure_png, redraw_background

    fig, ax, image, text = _blitted_figure()
    for value, title in ((0.2, "first"), (0.9, "second")):
        image.set_data(np.full((4, 4), value))
        text.set_text(title)
        png = fig.png()
        assert _close_pictures(png, figure_png(fig))
    assert drawn.count("a static label") == 1 + 2  # once for the background; twice more by the savefigs above
    ax.set_title("another static label", fontsize=8, y=-0.2)
    redraw_background(fig)
    assert _close_pictures(fig.png(), figure_png(fig)) and drawn.count("another static label") == 2


def test_a_text_is_rasterised_once_per_look_and_pasted_after(drawn):
    """A moving text shown again as it was is pasted from its stamp, not laid out and rasterised again."""
    fig, _, _, text = _blitted_figure()
    pictures = {}
    for title in ("one", "two", "one", "two", "one"):
        text.set_text(title)
        pictures.setdefault(title, set()).add(fig.png())
    assert drawn.count("one") == drawn.count("two") == 1
    assert all(len(shown) == 1 for shown in pictures.values())  # a pasted text gives the pixels its first drawing gave
    text.set_color("tab:red")
    fig.png()
    assert drawn.count("one") == 2  # another look: drawn anew


def test_explorer_moves_leave_the_output_area_alone_until_a_move_fails(monkeypatch):
    """A good move enters no output area (the figure and readout are widgets of their own); a failing move shows
    its traceback there, and the next good move clears it."""
    from vitstudy.widgets import explorer_interactive

    entered, cleared = [], []
    enter, clear = ipywidgets.Output.__enter__, ipywidgets.Output.clear_output
    monkeypatch.setattr(ipywidgets.Output, "__enter__", lambda self: entered.append(1) or enter(self))
    monkeypatch.setattr(
        ipywidgets.Output, "clear_output", lambda self, *a, **k: cleared.append(k) or clear(self, *a, **k)
    )

    def view(x: int):
        return _square_view(_square(x))

    widget = explorer_interactive(view, _square_readout, show=False, x=ipywidgets.IntSlider(2, 0, 5))
    set_controls(widget, {"x": 4})
    assert entered == [] and cleared == []
    with pytest.raises(WidgetCallbackError):
        set_controls(widget, {"x": 3})
    assert len(entered) >= 1 and cleared == [{"wait": True}]
    set_controls(widget, {"x": 5})
    assert cleared == [{"wait": True}, {}] and widget.result.summary["x"] == 25
    set_controls(widget, {"x": 4})
    assert len(cleared) == 2


def test_text_stamps_keep_the_most_recent_within_their_byte_budget():
    """Stamps beyond the byte budget are forgotten oldest first, so a long session's titles do not pile up."""
    from vitstudy.widgets import TextStamps

    fig, _, _, text = _blitted_figure()
    fig.stamps = TextStamps(kept_bytes=20_000)
    for number in range(40):
        text.set_text(f"title number {number}")
        fig.png()
    kept = fig.stamps._stamps
    assert 1 <= len(kept) < 40 and sum(stamp[0].nbytes for stamp in kept.values()) <= 20_000
    assert next(reversed(kept))[0] == "title number 39"


def test_a_resized_live_figure_draws_a_new_background():
    """A live figure resized after its first move draws a background of the new size, as savefig draws it."""
    from vitstudy.widgets import figure_png

    fig, _, _, text = _blitted_figure()
    text.set_text("before")
    fig.png()
    fig.set_size_inches(4, 2)
    assert _close_pictures(fig.png(), figure_png(fig))


def test_an_explorer_move_computes_on_one_torch_thread(monkeypatch):
    """A move's view runs on one torch thread and torch gets its count back after; under VITSTUDY_SHARE_CORES=0
    (or OMP_NUM_THREADS) the count is left alone."""
    import torch

    from vitstudy.widgets import explorer_interactive

    seen = []

    def view(x: int):
        seen.append(torch.get_num_threads())
        return _square_view(x)

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("VITSTUDY_SHARE_CORES", raising=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        widget = explorer_interactive(view, _square_readout, show=False, x=ipywidgets.IntSlider(2, 0, 5))
        set_controls(widget, {"x": 4})
        assert seen == [1, 1] and torch.get_num_threads() == 2
        monkeypatch.setenv("VITSTUDY_SHARE_CORES", "0")
        set_controls(widget, {"x": 5})
        assert seen == [1, 1, 2]
    finally:
        torch.set_num_threads(threads)
