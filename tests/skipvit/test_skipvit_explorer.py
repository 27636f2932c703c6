"""The dropped-patch explorer (notebook 06): an image file as input, computing a trace, drawing it, the widget."""

from __future__ import annotations

import html
import io
import json

import numpy as np
import pytest
from PIL import Image

from vitstudy import skipvit as sv
from vitstudy.data import CorruptImageError
from vitstudy.widgets import ExplorerView, figure_png, set_controls


@pytest.fixture
def explorer(tiny_vit, images):
    model = sv.apply_skipvit(tiny_vit())
    return sv.explorer_widget(model, images(batch=2), labels=[3, 5], classes=[str(k) for k in range(10)], show=False)


# ----------------------------------------------------------------------------------------------------------
# The widget


def test_explorer_moves_show_each_stage(explorer):
    """Moving the explorer's sliders to 4,7 → 10 at 30% shows two stages keeping 35 then 25 of 49 patches."""
    view = set_controls(explorer, {"first_layer": 4, "second_layer": 7, "ratio": 0.3, "skip_layer": 10})
    assert isinstance(view, ExplorerView)
    assert view.summary["kept_per_stage"] == [35, 25] and view.summary["patches"] == 49
    assert view.summary["label"] == "5" or view.summary["label"] == "3"
    greyed = view.summary["greyed_patches_per_stage"]  # what the figure greys: the patches not kept
    assert [len(g) for g in greyed] == [14, 24]
    for stage, grey in zip(view.details, greyed):
        assert sorted(set(range(49)) - set(stage.kept[0].tolist())) == grey


def test_explorer_invalid_combination_shows_a_message(explorer):
    """A skip layer before the drop layer gives a message naming the value, not a callback error."""
    view = set_controls(explorer, {"first_layer": 6, "second_layer": 0, "skip_layer": 4})
    assert "skip_layer=4" in view.summary["error"] and view.details == []


def test_explorer_settings_reads_second_layer_zero_as_one_stage():
    """Slider values → settings: second drop 0 means one stage; fused mode has no skip layer."""
    assert sv.explorer_settings(6, 0, 0.55, 11, "skip") == sv.preset("skip_6_55_s11")
    assert sv.explorer_settings(6, 0, 0.45, 11, "fused") == sv.preset("fused_6_45")


def test_explorer_widget_shows_the_readout_and_keeps_the_summary(explorer):
    """After a move the widget shows readout() of the view and keeps its summary as JSON in the hidden element."""
    view = set_controls(explorer, {"first_layer": 4, "second_layer": 0, "ratio": 0.3, "skip_layer": 10})
    assert explorer.readout.value == f"<p>{html.escape(sv.explorer.readout(view.summary))}</p>"
    assert json.loads(html.unescape(explorer.readout_data.value))["kept_per_stage"] == [35]


def _same_picture(shown: bytes, drawn: bytes) -> bool:
    """The widget's PNG shows what savefig draws of the same view: blitting and pasted text stamps may round a pixel's
    blending by a few levels, never more (a missing, moved or different artist or text differs by far more)."""
    shown_pixels, drawn_pixels = (np.asarray(Image.open(io.BytesIO(bytes(png)))).astype(int) for png in (shown, drawn))
    return shown_pixels.shape == drawn_pixels.shape and np.abs(shown_pixels - drawn_pixels).max() <= 8


def test_a_move_redraws_the_widgets_figure_in_place(explorer, figures_made):
    """Within a layout (one stage here) a move builds no Figure: the live one is redrawn and its PNG replaces the
    image widget's bytes; numbers and pixels are those explore() computes and draws for the same controls."""
    built, before = len(figures_made), bytes(explorer.figure.value)
    view = set_controls(explorer, {"ratio": 0.45, "index": 1})
    assert len(figures_made) == built and bytes(explorer.figure.value) != before
    model, images = explorer.explorer.model, explorer.explorer.images
    classes = [str(k) for k in range(10)]
    expected = sv.explore(model, images[1], sv.explorer_settings(6, 0, 0.45, 11, "skip"), classes, 5)
    assert view.summary == expected.summary and view.figure is explorer.result.figure
    assert _same_picture(explorer.figure.value, figure_png(expected.figure))


def test_each_layout_gets_one_figure_kept_for_the_widgets_life(explorer, figures_made):
    """Two stages, an invalid setting and back: one new Figure per layout first seen, none when one comes back."""
    built = len(figures_made)  # the widget drew its first layout when it was built
    set_controls(explorer, {"second_layer": 8, "skip_layer": 10})  # two stages: a new layout
    set_controls(explorer, {"skip_layer": 4})  # invalid: the message's layout
    set_controls(explorer, {"second_layer": 0, "skip_layer": 11})  # one stage again
    set_controls(explorer, {"second_layer": 8, "skip_layer": 10})
    assert len(figures_made) - built == 2


def test_moving_back_reuses_the_trace_and_each_image_runs_without_dropping_once(explorer):
    """A forward per new (image, setting), none for one seen before; the forward without dropping once per image."""
    forwards = []
    explorer.explorer.model.patch_embed.register_forward_hook(lambda *_: forwards.append(1))
    set_controls(explorer, {"ratio": 0.3})  # image 0 at a new ratio: dropping on only
    set_controls(explorer, {"ratio": 0.55})  # back to the first setting: cached
    set_controls(explorer, {"index": 1})  # a new image: dropping on and off
    set_controls(explorer, {"index": 0})
    assert len(forwards) == 3


def test_trace_image_given_the_prediction_without_dropping_runs_one_forward(tiny_vit, images):
    """The probabilities without dropping, when given, replace that forward and give the same trace."""
    model, image = sv.apply_skipvit(tiny_vit()), images(batch=1)[0]
    off = sv.explorer.dropping_off_probabilities(model, image)
    forwards = []
    model.patch_embed.register_forward_hook(lambda *_: forwards.append(1))
    given = sv.trace_image(model, image, sv.TABLE1["skip_6_55_s11"], probabilities_dropping_off=off)
    assert given.summary == sv.trace_image(model, image, sv.TABLE1["skip_6_55_s11"]).summary and len(forwards) == 3


# ----------------------------------------------------------------------------------------------------------
# The readout a person reads


def _summary(**changes):
    summary = dict(
        setting="skip_6_55_s11",
        drop_layers=[6],
        mode="skip",
        skip_layer=11,
        kept_per_stage=[22],
        dropped_per_stage=[27],
        patches=49,
        prediction_dropping_on="Coat",
        confidence_dropping_on=0.183,
        prediction_dropping_off="Shirt",
        confidence_dropping_off=0.421,
        label="Coat",
    )
    return {**summary, **changes}


def test_readout_says_what_each_stage_keeps_and_the_predictions():
    """One stage in skip mode: kept of all patches, where the rest go, both predictions and the true class."""
    assert sv.explorer.readout(_summary()) == (
        "After block 6: 22 of 49 patches kept, 27 skip to block 11. "
        "Prediction Coat 18% with dropping, Shirt 42% without (true class Coat)."
    )


def test_readout_counts_the_second_stage_from_what_the_first_kept():
    """Two fused stages: the second ranks the first's kept patches; no true class for an image file."""
    summary = _summary(
        drop_layers=[4, 7],
        mode="fused",
        skip_layer=None,
        kept_per_stage=[35, 25],
        dropped_per_stage=[14, 10],
        label=None,
    )
    assert sv.explorer.readout(summary).startswith(
        "After block 4: 35 of 49 patches kept, 14 are fused into one token; "
        "after block 7: 25 of 35 patches kept, 10 are fused into one token. Prediction Coat 18% with dropping,"
    )
    assert sv.explorer.readout(summary).endswith("Shirt 42% without.")


def test_readout_of_no_dropping_and_of_an_invalid_setting():
    """No stage says every patch goes through every block; an invalid setting repeats its message."""
    baseline = _summary(drop_layers=[], kept_per_stage=[], dropped_per_stage=[])
    assert sv.explorer.readout(baseline).startswith("No patch is dropped: all 49 go through every block. Prediction")
    assert (
        sv.explorer.readout({"error": "skip_layer=4 is not allowed"})
        == "Not a valid setting: skip_layer=4 is not allowed"
    )


# ----------------------------------------------------------------------------------------------------------
# Computing and drawing


def test_explore_predicts_with_and_without_dropping(tiny_vit, images):
    """explore reports the prediction with dropping on and off; the off one is the stock model's."""
    model, x = tiny_vit(), images(batch=1)
    expected = str(int(model(x).argmax()))
    view = sv.explore(sv.apply_skipvit(model), x[0], sv.TABLE1["skip_6_55_s11"])
    assert view.summary["prediction_dropping_off"] == expected and view.summary["kept_per_stage"] == [23]
    assert len(view.figure.axes) == 3
    assert [stage.layer for stage in view.details] == [6] and isinstance(view.details[0], sv.Stage)


def test_trace_image_counts_kept_and_dropped_patches(tiny_vit, images):
    """Per stage, kept + dropped = the patches present; probabilities sum to 1; the model's settings are restored."""
    model = sv.apply_skipvit(tiny_vit(), "drop_6_55")
    trace = sv.trace_image(model, images(batch=1)[0], sv.TABLE1["skip_4_7_30_s10"], label=2)
    summary = trace.summary
    assert summary["kept_per_stage"] == [35, 25] and summary["dropped_per_stage"] == [14, 10]
    assert [s.present.shape[1] for s in trace.stages] == [49, 35] and trace.grid_size == (7, 7)
    for probabilities in (trace.probabilities_dropping_on, trace.probabilities_dropping_off):
        assert probabilities.shape == (10,) and float(probabilities.sum()) == pytest.approx(1)
    assert summary["confidence_dropping_on"] == pytest.approx(float(trace.probabilities_dropping_on.max()))
    assert summary["label"] == "2" and model.skipvit == sv.preset("drop_6_55")


def test_explorer_figure_draws_a_trace_without_the_model(tiny_vit, images):
    """explorer_figure needs only the image and the trace: 1 + 2 panels per stage, predictions in the title."""
    image = images(batch=1)[0]
    trace = sv.trace_image(tiny_vit(), image, sv.TABLE1["skip_4_7_30_s10"], label=1)
    fig = sv.explorer_figure(image, trace)
    assert len(fig.axes) == 1 + 2 * 2
    title = fig.axes[0].get_title()
    assert "true: 1" in title and f"dropping on: {trace.summary['prediction_dropping_on']}" in title
    assert "35/49 kept" in fig.axes[2].get_title() and "skip blocks 5–9 / 8–9" in fig._suptitle.get_text()


def test_explorer_figure_says_when_nothing_is_dropped(tiny_vit, images):
    """The baseline setting draws the image and a panel saying no dropping happens."""
    image = images(batch=1)[0]
    fig = sv.explorer_figure(image, sv.trace_image(tiny_vit(), image, sv.BASELINE))
    assert len(fig.axes) == 3 and "no dropping" in fig.axes[1].texts[0].get_text()


# ----------------------------------------------------------------------------------------------------------
# Inputs


def test_load_image_uses_the_models_transform(tiny_vit, tmp_path):
    """An image file becomes the model's input size and channels (grey 28×28 for the small model)."""
    path = tmp_path / "photo.png"
    Image.new("RGB", (60, 40), (200, 10, 10)).save(path)
    assert sv.load_image(path, tiny_vit(depth=1)).shape == (1, 28, 28)


def test_load_image_names_an_undecodable_file(tiny_vit, tmp_path):
    """A file that is not an image raises an error naming it."""
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        sv.load_image(path, tiny_vit(depth=1))


def test_class_names_fall_back_to_indices(tiny_vit):
    """Given names are kept; a 10-class head without names gets '0' … '9'."""
    assert sv.class_names(tiny_vit(depth=1), ["a", "b"]) == ["a", "b"]
    assert sv.class_names(tiny_vit(depth=1)) == [str(k) for k in range(10)]
