"""The widget-latency measurement (vitstudy.measure.widget_latency) without a browser: its budget and moves.
The measurement itself is run by hand (``python -m vitstudy measure widget_latency``)."""

import pytest

from vitstudy.measure import widget_latency


def test_quick_is_the_only_scale():
    """The explorers are timed on the quick report's caches; another scale is named in one ValueError line."""
    assert widget_latency.budget("quick").repeats == 3
    with pytest.raises(ValueError, match=r"scale='smoke' is not allowed: expected one of quick"):
        widget_latency.budget("smoke")


@pytest.mark.parametrize(
    ("moves", "start"),
    [
        (widget_latency.PATCH_DROP_MOVES, widget_latency.PATCH_DROP_START),
        (widget_latency.EXIT_MOVES, widget_latency.EXIT_START),
    ],
)
def test_every_move_changes_a_control_and_the_list_ends_where_it_started(moves, start):
    """Each move sets a control the explorer has to a new value, and the last value of each control is its start,
    so every repeat makes the same moves."""
    state = dict(start)
    for *_, key, value in moves:
        assert key in state and state[key] != value
        state[key] = value
    assert state == start


def test_output_folder_is_figures_unless_another_is_named(monkeypatch, tmp_path):
    """The table and screenshots go to figures/ unless $VITSTUDY_LATENCY_OUT names another folder (a run for
    direction only leaves the committed ones alone)."""
    from vitstudy.files import project_root

    monkeypatch.delenv("VITSTUDY_LATENCY_OUT", raising=False)
    assert widget_latency.output_folder() == project_root() / "figures"
    monkeypatch.setenv("VITSTUDY_LATENCY_OUT", str(tmp_path / "direction"))
    assert widget_latency.output_folder() == tmp_path / "direction"


class _FakePage:
    """What timed_move asks of a page: the figure's source and the hidden summary change once the move is made."""

    def __init__(self) -> None:
        self.moved, self.armed = False, None

    def evaluate(self, script: str, argument: object = None) -> object:
        if argument is not None:
            self.armed = argument
            return None
        return {"started": 1000.0, "shown": 1042.0}

    def wait_for_function(self, *args, **kwargs) -> None:
        assert self.moved


def test_timed_move_reports_the_pages_own_time_and_the_drivers(monkeypatch):
    """A move is timed in the page (from its input event to the view shown) and from the driver's side; the page's
    timer is armed with the summary the move must show, before the move."""
    from vitstudy.tools import browser

    page = _FakePage()
    monkeypatch.setattr(widget_latency, "_image_source", lambda p: "blob:new" if p.moved else "blob:old")
    monkeypatch.setattr(browser, "shown_data", lambda p: '{"x": 2}' if p.moved else '{"x": 1}')

    def move(p, label, argument):
        assert p.armed == '{"x": 2}'  # armed before the move
        p.moved = True

    seconds, driver_seconds = widget_latency.timed_move(page, move, "x", "ArrowRight", '{"x": 2}\n', 5.0)
    assert seconds == 0.042 and driver_seconds >= 0
