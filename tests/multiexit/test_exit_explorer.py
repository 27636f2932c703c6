"""multiexit.explorer: the explorer's view and widget, driven without a browser."""

from vitstudy import multiexit
from vitstudy.widgets import ExplorerView, set_controls


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
