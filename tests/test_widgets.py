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
