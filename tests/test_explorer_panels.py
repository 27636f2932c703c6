"""What notebook 06's explorers draw with (vitstudy.explorer_panels): the merge overlay, prediction titles, the
merge drawing redrawn in place."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from vitstudy import explorer_panels as panels
from vitstudy.plots import display_image

S = panels.PIXELS_PER_PATCH


def _patch_colour(overlay: np.ndarray, row: int, column: int) -> np.ndarray:
    """The fill at a patch's centre (away from any outline)."""
    return overlay[row * S + S // 2, column * S + S // 2]


def test_merge_overlay_colours_each_merged_token_once_and_leaves_lone_patches_clear():
    """A 2x3 grid: tokens {0, 4}, {1, 2} merged, 3 and 5 alone: each merged token's patches share one colour, the two
    tokens differ, and the lone patches stay transparent."""
    token_of_patch = np.array([7, 9, 9, 2, 7, 4])  # any ids: 7 holds patches 0 and 4, 9 holds 1 and 2
    overlay = panels.merge_overlay(token_of_patch, (2, 3))
    assert overlay.shape == (2 * S, 3 * S, 4)
    first, second = _patch_colour(overlay, 0, 0), _patch_colour(overlay, 0, 1)
    assert np.array_equal(first, _patch_colour(overlay, 1, 1)) and np.array_equal(second, _patch_colour(overlay, 0, 2))
    assert not np.array_equal(first, second) and first[3] == second[3] == panels.FILL_ALPHA
    assert _patch_colour(overlay, 1, 0)[3] == 0 and _patch_colour(overlay, 1, 2)[3] == 0


def test_merge_overlay_outlines_merged_tokens_only():
    """The border between two tokens is one outline pixel wide where one side is merged; between two lone patches
    there is none; inside a merged token there is none."""
    overlay = panels.merge_overlay(np.array([0, 0, 1, 2]), (1, 4))
    alpha_row = overlay[S // 2, :, 3]
    outline = np.flatnonzero(alpha_row == panels.OUTLINE[3])
    assert outline.tolist() == [2 * S - 1]  # between patches 1 (merged) and 2; none between patches 0 and 1
    assert not np.any(panels.merge_overlay(np.arange(4), (2, 2))[..., 3])  # nothing merged: all clear


def test_group_colours_are_distinct():
    colours = panels.group_colours(20)
    assert len({tuple(c.round(3)) for c in colours}) == 20


def test_predictions_title_states_the_truth_then_each_condition():
    title = panels.predictions_title("Coat", [("merging on", "Shirt", 0.514), ("merging off", "Coat", 0.9)])
    assert title == "true: Coat\nmerging on: Shirt (51%)\nmerging off: Coat (90%)"
    long = panels.predictions_title(None, [("on", "tabby, tabby cat, " * 5, 1.0)])  # ImageNet's run long
    assert long.startswith("on: tabby, tabby cat,") and long.endswith("… (100%)")
    assert len(long) <= len("on: ") + panels.TITLE_CHARACTERS + len(" (100%)")


def test_merge_drawing_updates_in_place():
    """One drawing, two updates: the same figure and artists, new overlay pixels and titles."""
    image = torch.rand(1, 28, 28)
    drawing = panels.MergeDrawing(Figure(), tuple(image.shape))
    maps = [(np.arange(49), "alone"), (np.repeat(np.arange(7), 7), "rows merged")]
    fig = drawing.update(display_image(image), "img", maps, (7, 7), "first")
    overlay = drawing.overlays[1]
    assert fig is drawing.figure and len(fig.axes) == 3 and fig.axes[2].title.get_text() == "rows merged"
    assert not drawing.overlays[0].get_array()[..., 3].any() and overlay.get_array()[..., 3].any()
    drawing.update(display_image(image), "img", [maps[1], maps[0]], (7, 7), "second")
    assert drawing.overlays[1] is overlay and not overlay.get_array()[..., 3].any()
    assert drawing.title.get_text() == "second" and len(fig.axes) == 3
