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
