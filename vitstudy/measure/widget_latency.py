"""Time from a control move to the updated explorer view, in JupyterLab in a real browser, at the quick scale.

A hand-run measurement (a timing is no pass/fail on a shared CPU), after ``make report`` made the quick caches:

    python -m vitstudy measure widget_latency

For each move it waits until the explorer holds the package's numbers for the new setting (the summary JSON in its
hidden readout element) AND a new figure image, decoded. ``seconds`` is what the page itself measured, from the input
event (key press, click, dropdown choice) to that view (:func:`vitstudy.tools.browser.arm_move_timer`): what a user
waits for. ``driver_seconds`` is the same move timed from the driver's side, from before Playwright makes the move
until its polling sees the view, which adds the driver's own round trips.
:func:`measure` writes ``figures/tables/11_widget_latency.{csv,md}`` (every move) with the machine named in each row,
and the explorers' screenshots to ``figures/screens/``; ``$VITSTUDY_LATENCY_OUT`` names another folder for both
(a run for direction only, e.g. beside other work on a shared machine, leaves the committed ones alone).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import report
from ..bench import environment_info
from ..config import scale_budget
from ..files import project_root
from ..tools import browser


@dataclass(frozen=True)
class WidgetLatencyBudget:
    """How the explorer moves are timed at one scale."""

    scale: str
    repeats: int = 3  # each move list runs this often; the first pass includes warm-up effects and is kept
    move_timeout_s: float = 60.0  # a view not updated by then is a failure, not a slow move
    notebook_timeout_ms: int = 900_000  # running a whole explorer notebook, its caches made by `make report`


BUDGETS: dict[str, WidgetLatencyBudget] = {"quick": WidgetLatencyBudget("quick")}

# Where each explorer's controls stand before the timed moves (06: after its own last cell and one typed fix)
PATCH_DROP_START = dict(index=3, first_layer=6, second_layer=0, ratio=0.3, skip_layer=11, mode="skip")
EXIT_START = dict(variant="finetune", exits="3", policy="sample", threshold=0.5, start=24)
# (label of the control, how it is moved, the key or option, the state key it changes, its new value); each list
# ends where it started, so every repeat makes the same moves
PATCH_DROP_MOVES = [
    ("drop ratio", browser.press_slider, "ArrowRight", "ratio", 0.35),
    ("drop after", browser.press_slider, "ArrowLeft", "first_layer", 5),
    ("image", browser.press_slider, "ArrowRight", "index", 4),
    ("mode", browser.choose, "fused", "mode", "fused"),
    ("mode", browser.choose, "skip", "mode", "skip"),
    ("drop ratio", browser.press_slider, "ArrowLeft", "ratio", 0.3),
    ("drop after", browser.press_slider, "ArrowRight", "first_layer", 6),
    ("image", browser.press_slider, "ArrowLeft", "index", 3),
]
EXIT_MOVES = [
    ("threshold", browser.press_slider, "ArrowRight", "threshold", 0.505),
    ("exits after", browser.choose, "3,6,9", "exits", "3,6,9"),
    ("policy", browser.choose, "batch", "policy", "batch"),
    ("variant", browser.choose, "separate", "variant", "separate"),
    ("first image", browser.press_slider, "ArrowRight", "start", 48),
    ("threshold", browser.press_slider, "ArrowLeft", "threshold", 0.5),
    ("exits after", browser.choose, "3", "exits", "3"),
    ("policy", browser.choose, "sample", "policy", "sample"),
    ("variant", browser.choose, "finetune", "variant", "finetune"),
    ("first image", browser.press_slider, "ArrowLeft", "start", 24),
]


def budget(scale: str) -> WidgetLatencyBudget:
    """The widget-latency budget of ``scale`` (:func:`vitstudy.config.scale_budget`)."""
    return scale_budget(BUDGETS, scale)


def _image_source(page) -> str:
    images = page.locator(browser.FIGURE_IMAGES)
    return images.first.get_attribute("src") if images.count() else ""


def timed_move(page, move: Callable, label: str, argument: Any, expected: str, timeout_s: float) -> tuple[float, float]:
    """Seconds from the move until the hidden summary equals ``expected`` and a new figure image is shown: as the page
    measured them (from the input event), and as the driver saw them (from before it made the move)."""
    before = _image_source(page)
    browser.arm_move_timer(page, expected)
    started = time.perf_counter()
    move(page, label, argument)
    while time.perf_counter() - started < timeout_s:
        if browser.shown_data(page) == expected.strip() and _image_source(page) not in ("", before):
            driver_seconds = time.perf_counter() - started
            return browser.move_seconds(page, timeout_s), driver_seconds
        time.sleep(0.01)
    raise TimeoutError(f"{label}: the view did not update within {timeout_s} s")


def time_moves(page, explorer: str, state: dict, moves: list, expected: Callable, chosen: WidgetLatencyBudget):
    """One row per move and repeat: ``state`` (the controls' current setting) follows the moves; ``expected``
    gives the package's summary JSON for a setting (:func:`browser.skipvit_expected`, :func:`browser.exit_expected`)."""
    rows = []
    for repeat in range(chosen.repeats):
        for label, move, argument, key, value in moves:
            state[key] = value
            seconds, driver = timed_move(page, move, label, argument, expected(page, state), chosen.move_timeout_s)
            rows.append(
                dict(
                    explorer=explorer,
                    control=label,
                    move=str(argument),
                    repeat=repeat,
                    seconds=seconds,
                    driver_seconds=driver,
                )
            )
    return rows


def time_explorers(page, base: str, token: str, chosen: WidgetLatencyBudget, screens: Path | None = None) -> list[dict]:
    """Every move of notebooks 06 and 07, from the setting each notebook's own last cell leaves; with ``screens``, a
    screenshot of each explorer after its moves (``<notebook>.png``: the README's pictures, on this scale's model)."""
    browser.open_and_run(page, base, token, "06_patch_drop_explorer.py", timeout_ms=chosen.notebook_timeout_ms)
    state = dict(PATCH_DROP_START)
    browser.type_slider(page, "back at block", 11)  # the notebook leaves an invalid setting on purpose
    browser.wait_for_data(page, browser.skipvit_expected(page, state))
    rows = time_moves(page, "06_patch_drop_explorer", state, PATCH_DROP_MOVES, browser.skipvit_expected, chosen)
    if screens is not None:
        browser.screenshot_explorer(page, screens / "06_patch_drop_explorer.png")
    browser.open_and_run(page, base, token, "07_exit_explorer.py", timeout_ms=chosen.notebook_timeout_ms)
    state = dict(EXIT_START)
    rows += time_moves(page, "07_exit_explorer", state, EXIT_MOVES, browser.exit_expected, chosen)
    if screens is not None:
        browser.screenshot_explorer(page, screens / "07_exit_explorer.png")
    return rows


def output_folder() -> Path:
    """Where :func:`measure` writes its table (under ``tables/``) and screenshots (under ``screens/``): ``figures/``,
    or the folder ``$VITSTUDY_LATENCY_OUT`` names."""
    chosen = os.environ.get("VITSTUDY_LATENCY_OUT")
    return Path(chosen).resolve() if chosen else project_root() / "figures"


def measure(scale: str = "quick") -> None:
    """Time every explorer move at ``scale`` in JupyterLab and write ``11_widget_latency``; the explorers'
    screenshots after the moves replace ``screens/`` (the README's pictures, on this scale's model), both in
    :func:`output_folder`."""
    chosen, out = budget(scale), output_folder()
    folder = Path(tempfile.mkdtemp(prefix="widget-latency-"))
    env = dict(os.environ, VITSTUDY_OUT=str(folder / "figures"))  # the notebooks' own figures stay out of figures/
    with browser.jupyter_lab(folder, scale, env) as (base, token), browser.chromium_page(folder) as page:
        rows = time_explorers(page, base, token, chosen, screens=out / "screens")
    info = environment_info("cpu")
    # other processes on a shared 2-core VM move every timing: the 1-minute load average says how busy it was
    frame = pd.DataFrame(rows).assign(
        scale=scale,
        machine=f"{info['device_name']}, {info['cpu_threads']} threads",
        torch=info["torch"],
        load_average=round(os.getloadavg()[0], 2),
    )
    report.save_table(frame, "11_widget_latency", out=out, floatfmt=".3f")
    for explorer, group in frame.groupby("explorer"):
        seconds, driver = group["seconds"], group["driver_seconds"]
        print(
            f"{explorer}: median {statistics.median(seconds):.3f} s, max {seconds.max():.3f} s over {len(seconds)} "
            f"(as the driver saw them: median {statistics.median(driver):.3f} s, max {driver.max():.3f} s)"
        )
