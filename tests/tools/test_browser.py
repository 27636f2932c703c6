"""JupyterLab in a real browser (Debian's Chromium driven by Playwright): one click opens a notebook, it runs, and
every control of the two explorers (06, 07) shows what the package computes for the setting a user picked.

The browser driving (server, page, run-all, moving a control, asking the kernel) is
:mod:`vitstudy.tools.browser`, shared with the hand-run ``widget_latency`` measurement."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from vitstudy.experiments import baseline
from vitstudy.files import project_root
from vitstudy.tools.browser import (
    CHROMIUM,
    FIGURE_IMAGES,
    arm_move_timer,
    assert_no_error_output,
    choose,
    chromium_page,
    cut_labels,
    exit_expected,
    jupyter_lab,
    move_seconds,
    open_and_run,
    press_slider,
    screenshot_explorer,
    shown_data,
    shown_sentences,
    skipvit_expected,
    type_slider,
    wait_for_data,
)

pytestmark = pytest.mark.browser

# Screenshots of the explorers after the test's moves. Tests never write into the project's figures on their own:
# VITSTUDY_SCREENS=<folder> keeps them there; otherwise a temporary folder. The README's screenshots (quick model)
# come from `python -m vitstudy measure widget_latency`.
SCREENS = (
    project_root() / os.environ["VITSTUDY_SCREENS"]
    if os.environ.get("VITSTUDY_SCREENS")
    else Path(tempfile.mkdtemp(prefix="vitstudy-screens-"))
)


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium: `apt-get install -y chromium` (make test installs it as root)")


@pytest.fixture
def lab(tmp_path, smoke_cache, share_cache):
    """A JupyterLab server on notebooks/ at the smoke scale, with temporary outputs (conftest's) and the session's
    trained smoke baseline (conftest's ``smoke_cache``): the notebooks load it instead of training it again."""
    _need_chromium()
    share_cache(smoke_cache, ("baselines", "multiexit"))  # as tests/test_notebooks.py shares them
    with jupyter_lab(tmp_path, "smoke") as server:
        yield server


@pytest.fixture
def page(lab, tmp_path):
    """A browser page on that server."""
    with chromium_page(tmp_path) as page:
        yield page


def move_and_read(page, move, label, argument, expected: str) -> dict:
    """Make one move, wait until the explorer's hidden summary equals ``expected`` (the package's, as JSON) and a
    figure image is shown; that summary, with readout sentences under the figure."""
    move(page, label, argument)
    wait_for_data(page, expected)
    page.locator(FIGURE_IMAGES).wait_for(timeout=30_000)
    assert shown_sentences(page), "no readout sentences under the figure"
    return json.loads(shown_data(page))


def test_quickstart_opens_with_one_click_runs_and_slider_moves(page, lab):
    """Double-clicking 00_quickstart.py opens a notebook; run-all succeeds; the browser slider updates the view."""
    base, token = lab
    open_and_run(page, base, token, "00_quickstart.py")
    readout = page.locator(".widget-slider .widget-readout").first
    before = int(readout.inner_text())
    page_size = baseline.budget("smoke").page_size  # the slider's step: one page of the prediction browser
    slider = page.locator(".widget-slider .noUi-handle").first
    slider.focus()
    slider.press("ArrowRight")
    page.wait_for_function(
        f"document.querySelector('.widget-slider .widget-readout').textContent.trim() === '{before + page_size}'",
        timeout=30_000,
    )
    assert page.locator(".jp-OutputArea-output", has_text="Traceback").count() == 0


# ----------------------------------------------------------------------------------------------------------
# The two explorers: every control moved to at least two settings, each checked against the package


def test_patch_drop_explorer_shows_what_skipvit_computes(page, lab):
    """06 in JupyterLab: every slider and the mode selector moved twice; after each move the explorer's kept and
    dropped counts, greyed patches per stage and predictions with dropping on and off equal the package's; every
    control's label is shown in full."""
    base, token = lab
    open_and_run(page, base, token, "06_patch_drop_explorer.py")
    assert cut_labels(page) == []
    # where the notebook's own last cell left the controls
    state = dict(index=3, first_layer=6, second_layer=0, ratio=0.3, skip_layer=4, mode="skip")
    moves = [
        ("back at block", type_slider, 11, "skip_layer", 11),
        ("back at block", press_slider, "ArrowLeft", "skip_layer", 10),
        ("drop after", type_slider, 4, "first_layer", 4),
        ("drop after", press_slider, "ArrowRight", "first_layer", 5),
        ("2nd drop (0=none)", type_slider, 8, "second_layer", 8),
        ("2nd drop (0=none)", press_slider, "ArrowLeft", "second_layer", 7),
        ("drop ratio", type_slider, 0.5, "ratio", 0.5),
        ("drop ratio", press_slider, "ArrowRight", "ratio", 0.55),
        ("image", type_slider, 0, "index", 0),
        ("image", press_slider, "ArrowRight", "index", 1),
        ("mode", choose, "fused", "mode", "fused"),
        ("mode", choose, "drop", "mode", "drop"),
        ("mode", choose, "skip", "mode", "skip"),
    ]
    for label, move, argument, key, value in moves:
        state[key] = value
        shown = move_and_read(page, move, label, argument, skipvit_expected(page, state))
        kept, dropped, greyed = (shown[k] for k in ("kept_per_stage", "dropped_per_stage", "greyed_patches_per_stage"))
        stages = 1 if state["second_layer"] == 0 else 2
        assert len(kept) == len(dropped) == len(greyed) == stages, shown
        assert [len(g) for g in greyed] == [shown["patches"] - k for k in kept], shown
    assert_no_error_output(page)
    SCREENS.mkdir(parents=True, exist_ok=True)
    screenshot_explorer(page, SCREENS / "06_patch_drop_explorer.png")


def test_exit_explorer_shows_what_the_simulation_computes(page, lab):
    """07 in JupyterLab: threshold, variant, exits, policy and first image moved twice each; after each move the
    exit-block histogram, top-1, speed-up and the grid's exit blocks equal the package's for that setting; every
    control's label is shown in full."""
    base, token = lab
    open_and_run(page, base, token, "07_exit_explorer.py")
    assert cut_labels(page) == []
    state = dict(variant="finetune", exits="3", policy="sample", threshold=0.5, start=24)  # the notebook's last move
    moves = [
        ("threshold", type_slider, 0.8, "threshold", 0.8),
        ("threshold", press_slider, "ArrowRight", "threshold", 0.805),
        ("variant", choose, "separate", "variant", "separate"),
        ("variant", choose, "same", "variant", "same"),
        ("exits after", choose, "3,6,9", "exits", "3,6,9"),
        ("exits after", choose, "6", "exits", "6"),
        ("policy", choose, "batch", "policy", "batch"),
        ("policy", choose, "sample", "policy", "sample"),
        ("first image", press_slider, "ArrowRight", "start", 48),
        ("first image", type_slider, 0, "start", 0),
        ("exits after", choose, "3,6,9", "exits", "3,6,9"),
    ]
    for label, move, argument, key, value in moves:
        state[key] = value
        shown = move_and_read(page, move, label, argument, exit_expected(page, state))
        blocks = [*map(int, state["exits"].split(",")), 12]
        assert abs(sum(shown[f"at_{b}_pct"] for b in blocks) - 100) < 1e-3, shown
        assert len(shown["shown_exit_blocks"]) == 24 and shown["first_image"] == state["start"]
    # widget_latency's timer in the page: it sees the key press and then the view of the new setting
    state["threshold"] = 0.81
    arm_move_timer(page, exit_expected(page, state))
    press_slider(page, "threshold", "ArrowRight")
    assert 0 < move_seconds(page, 30) < 30
    assert json.loads(shown_data(page))["threshold"] == 0.81
    assert_no_error_output(page)
    SCREENS.mkdir(parents=True, exist_ok=True)
    screenshot_explorer(page, SCREENS / "07_exit_explorer.png")
