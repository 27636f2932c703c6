"""multiexit.explorer: the explorer's view and widget, driven without a browser."""

import html
import io
import json

import numpy as np
from PIL import Image

from vitstudy import multiexit
from vitstudy.widgets import ExplorerView, figure_png, set_controls


def test_explore_returns_the_shared_view_with_its_simulation(digits_study):
    """explore() returns widgets.ExplorerView: the summary row, the figure and the Simulation behind them."""
    view = multiexit.explore(digits_study, "separate", (1, 2), "sample", 0.0, count=4)
    assert isinstance(view, ExplorerView) and isinstance(view.details, multiexit.Simulation)
    assert view.summary["exited_pct"] == 100 and (view.details.exit_block == 1).all()
    assert view.summary["shown_exit_blocks"] == [1, 1, 1, 1] and view.summary["first_image"] == 0
    assert view.figure.axes


def test_explorer_widget_follows_its_controls(digits_study):
    """Moving the explorer's controls updates exit shares, top-1 and the figure without a browser."""
    widget = multiexit.explorer_widget(digits_study, show=False, count=8)
    assert widget.result.figure.axes
    every = set_controls(widget, {"exits": "1", "policy": "sample", "threshold": 0.0})
    assert every.summary["exited_pct"] == 100 and every.summary["exits"] == "1"
    batch = set_controls(widget, {"threshold": 1.0, "policy": "batch"})
    assert batch.summary["exited_pct"] < 100 and batch.summary["policy"] == "batch"


def test_explorer_draws_the_images_as_one_mosaic(digits_study):
    """The shown images are one imshow on one axes (a slider move renders fast), beside the exit histogram."""
    view = multiexit.explore(digits_study, "separate", (1, 2), "sample", 0.5, count=8)
    grid_ax, hist_ax = view.figure.axes
    assert len(grid_ax.images) == 1 and len(grid_ax.texts) == 8 and len(hist_ax.patches) == 3


def _summary(**changes):
    summary = dict(
        variant="separate",
        exits="3,6,9",
        policy="sample",
        threshold=0.9,
        batch_size=None,
        top1=80.123,
        at_3_pct=40.0,
        at_6_pct=15.2,
        at_9_pct=7.0,
        at_12_pct=37.8,
        exited_pct=62.2,
        ideal_speedup=1.456,
        plain_top1=81.0,
    )
    return {**summary, **changes}


def test_readout_says_where_images_leave_and_what_it_costs():
    """Two sentences: the setting, the share leaving early and at each exit; top-1 vs plain and the speed-up."""
    assert multiexit.explorer.readout(_summary()) == (
        "Variant separate, exits after blocks 3,6,9, per-sample policy, threshold 0.9: 62.2% of the test images "
        "leave early (block 3: 40.0%, block 6: 15.2%, block 9: 7.0%) and 37.8% run to block 12. "
        "Top-1 80.12% against 81.00% for the plain model, FLOP-ideal speed-up 1.46x."
    )


def test_readout_names_the_batch_size_of_the_batch_policy():
    """The per-batch policy is named with its batch size."""
    assert "per-batch (64 images) policy" in multiexit.explorer.readout(_summary(policy="batch", batch_size=64))


def test_explorer_widget_shows_the_readout_and_keeps_the_summary(digits_study):
    """After a move the widget shows readout() of the view and keeps its summary as JSON in the hidden element."""
    widget = multiexit.explorer_widget(digits_study, show=False, count=8)
    view = set_controls(widget, {"exits": "1", "threshold": 0.0})
    assert widget.readout.value == f"<p>{html.escape(multiexit.explorer.readout(view.summary))}</p>"
    assert json.loads(html.unescape(widget.readout_data.value))["exited_pct"] == 100


def _same_picture(shown: bytes, drawn: bytes) -> bool:
    """The widget's PNG shows what savefig draws of the same view: blitting and pasted text stamps may round a pixel's
    blending by a few levels, never more (a missing, moved or different artist or text differs by far more)."""
    shown_pixels, drawn_pixels = (np.asarray(Image.open(io.BytesIO(bytes(png)))).astype(int) for png in (shown, drawn))
    return shown_pixels.shape == drawn_pixels.shape and np.abs(shown_pixels - drawn_pixels).max() <= 8


def test_a_move_redraws_the_widgets_figure_in_place(digits_study, figures_made):
    """Within a layout a move builds no Figure: the live one is redrawn and its PNG replaces the image widget's
    bytes; numbers and pixels are those explore() computes and draws for the same controls."""
    widget = multiexit.explorer_widget(digits_study, show=False, count=8)
    built, before = len(figures_made), bytes(widget.figure.value)
    view = set_controls(widget, {"threshold": 0.7, "policy": "batch", "start": 8})
    assert len(figures_made) == built and bytes(widget.figure.value) != before
    expected = multiexit.explore(digits_study, "separate", (1, 2), "batch", 0.7, start=8, count=8)
    assert view.summary == expected.summary and view.figure is widget.result.figure
    assert _same_picture(widget.figure.value, figure_png(expected.figure))


def test_moving_a_control_back_reuses_the_simulated_setting(digits_study, monkeypatch):
    """A setting is simulated once: moving back to it, or paging through images under it, simulates nothing."""
    simulated = []
    simulate = multiexit.explorer.simulate
    monkeypatch.setattr(multiexit.explorer, "simulate", lambda *a, **k: simulated.append(a[3:]) or simulate(*a, **k))
    widget = multiexit.explorer_widget(digits_study, show=False, count=8)
    set_controls(widget, {"threshold": 0.3})
    set_controls(widget, {"threshold": 0.9})
    set_controls(widget, {"start": 8})
    assert simulated == [(0.9, "sample"), (0.3, "sample")]


def test_another_exit_set_replaces_only_the_bars(digits_study, figures_made):
    """Changing the exit set redraws the same figure with one bar per block, as explore() draws it afresh."""
    widget = multiexit.explorer_widget(digits_study, show=False, count=8)
    built = len(figures_made)
    view = set_controls(widget, {"exits": "1", "threshold": 0.6})
    assert len(figures_made) == built and len(view.figure.axes[1].patches) == 2
    expected = multiexit.explore(digits_study, "separate", (1,), "sample", 0.6, count=8)
    assert _same_picture(widget.figure.value, figure_png(expected.figure))


def test_the_widget_runs_every_choices_heads_when_built(digits_study, monkeypatch):
    """Building the widget computes the test logits of every variant and exit set its dropdowns offer, once; no
    move then waits for a head."""
    from vitstudy.multiexit import study as study_module

    runs = []
    heads = study_module.logits_from_features
    monkeypatch.setattr(study_module, "logits_from_features", lambda *a: runs.append(a) or heads(*a))
    monkeypatch.setattr(digits_study, "_logits", {})  # as a new study has them: none yet
    widget = multiexit.explorer_widget(digits_study, show=False, count=8)
    assert len(runs) == len(digits_study.models)
    for variant, exits in digits_study.models:
        set_controls(widget, {"variant": variant, "exits": ",".join(map(str, exits)), "threshold": 0.4})
    assert len(runs) == len(digits_study.models)


def test_each_exit_set_keeps_its_own_background(digits_study, monkeypatch):
    """The histogram's ticks are drawn once per exit set: going back to a set redraws only what moves, and the
    picture is the one explore() draws."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    widget = multiexit.explorer_widget(digits_study, show=False, count=8)  # its first view: exits 1,2
    canvas, draws, draw = widget.result.figure.canvas, [], FigureCanvasAgg.draw
    monkeypatch.setattr(FigureCanvasAgg, "draw", lambda self: draws.append(self is canvas) or draw(self))
    for exits in ("1", "1,2", "1", "1,2", "1"):
        view = set_controls(widget, {"exits": exits})
    assert draws.count(True) == 1  # exits 1's background; 1,2's was drawn when the widget was built
    expected = multiexit.explore(digits_study, "separate", (1,), "sample", 0.9, count=8)
    assert view.summary == expected.summary and _same_picture(widget.figure.value, figure_png(expected.figure))
