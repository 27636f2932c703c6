"""Notebook 06 (vitstudy.experiments.skipvit.patch_drop_explorer): its inputs (the baseline on test images, the
cluttered data set, or any timm ViT with an image file) and ToMe as a rule in its explorer (token counts, the
partition of the patches, r = 0, the widget, bad settings)."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from vitstudy import skipvit as sv
from vitstudy import tome
from vitstudy.experiments.skipvit import patch_drop_explorer as pde
from vitstudy.widgets import figure_png, set_controls


def tiny_vit() -> torch.nn.Module:
    """The study's tiny 28x28 ViT at depth 2, seeded, in eval mode (stands in for a cached baseline)."""
    torch.manual_seed(0)
    return timm.create_model("vitstudy_tiny_patch4_28", depth=2).eval()


def test_explorer_inputs_model_name_needs_an_image_path():
    """MODEL_NAME without IMAGE_PATH is refused in one line that says what to set."""
    with pytest.raises(ValueError, match=r"MODEL_NAME='vit_small_patch16_224' needs IMAGE_PATH: .* MODEL_NAME = None"):
        pde.explorer_inputs("smoke", model_name="vit_small_patch16_224")


def test_explorer_inputs_model_name_with_an_image_file(tmp_path):
    """A timm model name and an image file: the patched model, one image in its input size, no labels."""
    path = tmp_path / "photo.png"
    Image.new("RGB", (60, 40), (200, 10, 10)).save(path)
    inputs = pde.explorer_inputs("smoke", image_path=path, model_name="vitstudy_tiny_patch4_28")
    assert isinstance(inputs.model, sv.SkipViTMixin) and not inputs.model.training
    assert inputs.images.shape == (1, 1, 28, 28) and inputs.labels is None and inputs.classes is None


def test_explorer_inputs_default_is_the_baseline_on_test_images(monkeypatch):
    """By default: the scale's baseline model, its class names, the first test images with their labels."""
    test = [(torch.full((1, 28, 28), float(i)), i % 3) for i in range(5)]
    run = SimpleNamespace(model=tiny_vit(), splits=SimpleNamespace(classes=["a", "b", "c"], test=test))
    monkeypatch.setattr(pde, "baseline", lambda scale: run)
    model, images, labels, classes = pde.explorer_inputs("smoke", count=4)
    assert model is run.model and isinstance(model, sv.SkipViTMixin)
    assert images.shape == (4, 1, 28, 28) and torch.equal(images[3], test[3][0])
    assert labels == [0, 1, 2, 0] and classes == ["a", "b", "c"]


def test_explorer_inputs_offer_the_cluttered_data_set(monkeypatch):
    """dataset="fashion_mnist_cluttered": the scale's recipe on the cluttered canvases (the patch-8 56x56 model),
    trained once by the same cached-baseline path; an unknown data set is one line."""
    asked = []
    test = [(torch.zeros(1, 56, 56), 0)]
    run = SimpleNamespace(model=tiny_vit(), splits=SimpleNamespace(classes=["a"], test=test))
    monkeypatch.setattr(pde, "baseline", lambda scale: asked.append(scale) or run)
    inputs = pde.explorer_inputs("smoke", dataset="fashion_mnist_cluttered")
    assert inputs.images.shape == (1, 1, 56, 56)
    train = asked[0].train
    assert (train.dataset, train.model) == ("fashion_mnist_cluttered", "vitstudy_tiny_patch8_56")
    assert asked[0].name == "smoke"
    with pytest.raises(ValueError, match="dataset='mnist' is not allowed"):
        pde.explorer_inputs("smoke", dataset="mnist")


# ----------------------------------------------------------------------------------------------------------
# ToMe as a rule: which patches merge into which token


def skipvit_vit(depth: int = 12) -> torch.nn.Module:
    """The study's tiny ViT (49 patches + [CLS]) patched for SkipViT, as explorer_inputs gives it."""
    torch.manual_seed(0)
    return sv.apply_skipvit(timm.create_model("vitstudy_tiny_patch4_28", depth=depth).eval())


IMAGES = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
CLASSES = [str(k) for k in range(10)]


@pytest.fixture
def rule_widget():
    return pde.explorer_widget(skipvit_vit(), IMAGES, labels=[3, 5], classes=CLASSES, show=False)


def test_merge_model_is_a_tome_copy_sharing_the_weights():
    """The SkipViT model stays as it is; the ToMe copy runs on the very same weight tensors."""
    model = skipvit_vit()
    merged = pde.merge_model(model)
    assert isinstance(model, sv.SkipViTMixin) and not isinstance(model, tome.ToMeMixin)
    assert isinstance(merged, tome.ToMeMixin) and not isinstance(merged, sv.SkipViTMixin)
    assert merged.blocks[3].attn.qkv.weight is model.blocks[3].attn.qkv.weight
    assert pde.merge_model(merged) is merged


def test_tome_trace_counts_the_tokens_left_after_each_block():
    """r = 3 in 12 blocks: 50 tokens lose 3 in every block, down to 14; after each block the 49 patches sit in as many
    tokens as are left besides [CLS]; the FLOP ideal is schedule_flops' ratio."""
    model = skipvit_vit()
    trace = pde.trace_merges(model, IMAGES[0], 3, CLASSES, 5)
    summary = trace.summary
    assert summary["tokens"] == 50 and summary["merged_per_block"] == [3] * 12
    assert summary["tokens_after_block"] == list(range(47, 13, -3))
    assert [len(set(owner.tolist())) for owner in trace.token_of_patch] == [t - 1 for t in range(47, 13, -3)]
    merged = pde.merge_model(model)
    assert summary["flop_ideal_speedup"] == pytest.approx(
        tome.schedule_flops(merged, 0) / tome.schedule_flops(merged, 3)
    )
    assert summary["rule"] == "tome" and summary["label"] == "5"


def test_every_patch_sits_in_exactly_one_final_token():
    """After every block the source rows (one per token) partition the 49 patches, and the explorer's token of each
    patch is the row that holds it."""
    model = pde.merge_model(skipvit_vit())
    with tome.merging(model, 3):
        _, states = tome.trace_blocks(model, IMAGES[:1])
    trace = pde.trace_merges(model, IMAGES[0], 3)
    for state, owner in zip(states, trace.token_of_patch):
        patches = state.source[0, 1:, 1:]  # tokens after [CLS] x patches
        assert torch.equal(patches.sum(dim=0), torch.ones(49)) and (patches.sum(dim=1) >= 1).all()
        assert owner.tolist() == patches.argmax(dim=0).tolist()
        assert state.source[0, 0].tolist() == [1.0] + [0.0] * 49  # [CLS] stands for itself alone


def test_r_zero_merges_nothing():
    """r = 0: every block keeps all 50 tokens, each patch its own token, the prediction is the stock one."""
    trace = pde.trace_merges(skipvit_vit(), IMAGES[0], 0)
    assert trace.summary["tokens_after_block"] == [50] * 12 and trace.summary["merged_per_block"] == [0] * 12
    assert all(owner.tolist() == list(range(49)) for owner in trace.token_of_patch)
    assert torch.allclose(trace.probabilities_merging_on, trace.probabilities_merging_off)
    assert trace.summary["flop_ideal_speedup"] == 1.0


def test_largest_fitting_r_is_the_last_r_every_block_merges_in_full():
    """49 patches: 12 blocks merge 3 each at most (the 12th receives 16 patch tokens); 2 blocks merge 16 each."""
    assert pde.largest_fitting_r(skipvit_vit()) == 3
    assert pde.largest_fitting_r(skipvit_vit(depth=2)) == 16
    pde.check_r_fits(skipvit_vit(depth=2), 16)
    with pytest.raises(ValueError, match=r"r=17 is too large: block 2 receives 32 patch tokens .* from 0 to 16"):
        pde.check_r_fits(skipvit_vit(depth=2), 17)


def test_the_widget_with_tome_raises_nothing_and_shows_tomes_sliders_only(rule_widget):
    """Mode tome: the view is ToMe's for those controls, its sliders shown and SkipViT's hidden; back to skip, the
    view is SkipViT's explore() and the sliders swap back."""
    display = {c._kwarg: c.layout.display for c in rule_widget.kwargs_widgets}
    assert [name for name, shown in display.items() if shown == "none"] == ["r", "after_block"]
    view = set_controls(rule_widget, {"mode": "tome", "r": 2, "after_block": 4, "index": 1})
    assert view.summary["rule"] == "tome" and view.summary["r"] == 2 and view.summary["shown_after_block"] == 4
    assert view.summary["tokens_after_block"][3] == 42 and len(set(view.summary["token_of_patch_shown"])) == 41
    hidden = [c._kwarg for c in rule_widget.kwargs_widgets if c.layout.display == "none"]
    assert hidden == ["first_layer", "second_layer", "ratio", "skip_layer"]
    assert "ToMe merges r = 2 tokens" in rule_widget.readout.value
    view = set_controls(rule_widget, {"mode": "skip"})
    model = rule_widget.explorer.patch_drop.model
    assert (
        view.summary == sv.explore(model, IMAGES[1], sv.explorer_settings(6, 0, 0.55, 11, "skip"), CLASSES, 5).summary
    )
    assert [c._kwarg for c in rule_widget.kwargs_widgets if c.layout.display == "none"] == ["r", "after_block"]


@pytest.mark.parametrize(
    ("controls", "message"),
    [
        ({"r": 10}, r"r=10 is too large: block 4 receives 19 patch tokens .* r is allowed from 0 to 3"),
        ({"r": -1}, r"r=-1 is not allowed: expected an integer >= 0"),
        ({"after_block": 13}, r"after_block=13 is not allowed: a block from 1 to 12"),
    ],
)
def test_a_bad_tome_setting_shows_one_message(rule_widget, controls, message):
    """An r some block cannot merge (or no r at all), or a block the model lacks: a message naming the value and
    what is allowed, in the widget, not a callback error; the next good move shows ToMe's view again."""
    set_controls(rule_widget, {"mode": "tome"})
    view = rule_widget.explorer.view(0, 6, 0, 0.55, 11, "tome", **{"r": 3, "after_block": 6, **controls})
    assert re.search(message, view.summary["error"]) and view.details == []
    if "r" in controls and controls["r"] >= 0:  # reachable with the slider
        set_controls(rule_widget, controls)
        assert re.search(message, rule_widget.result.summary["error"])
        assert rule_widget.readout.value.startswith("<p>Not a valid setting: r=10 is too large")
    assert "error" not in set_controls(rule_widget, {"r": 1, "after_block": 6}).summary


def test_a_tome_move_redraws_in_place_and_showing_another_block_runs_no_forward(rule_widget, figures_made):
    """Within ToMe a move builds no Figure, and another block to show is drawn from the cached trace (no forward);
    numbers and pixels are those explore_merges() computes and draws for the same controls."""
    set_controls(rule_widget, {"mode": "tome"})
    built, forwards = len(figures_made), []
    rule_widget.explorer.merges.model.patch_embed.register_forward_hook(lambda *_: forwards.append(1))
    set_controls(rule_widget, {"r": 1})  # one forward: a new r
    view = set_controls(rule_widget, {"after_block": 9})
    assert len(figures_made) == built and len(forwards) == 1
    expected = pde.explore_merges(skipvit_vit(), IMAGES[0], 1, 9, CLASSES, 3)
    assert view.summary == expected.summary
    assert _same_picture(rule_widget.figure.value, figure_png(expected.figure))


def _same_picture(shown: bytes, drawn: bytes) -> bool:
    """The widget's PNG shows what savefig draws of the same view: blitting and pasted text stamps may round a pixel's
    blending by a few levels, never more (a missing, moved or different artist or text differs by far more)."""
    shown_pixels, drawn_pixels = (np.asarray(Image.open(io.BytesIO(bytes(png)))).astype(int) for png in (shown, drawn))
    return shown_pixels.shape == drawn_pixels.shape and np.abs(shown_pixels - drawn_pixels).max() <= 8


def test_tome_readout_names_the_rule_r_tokens_and_flop_ideal():
    """The sentences state r per block, the tokens left after each block, the groups at the block shown, the FLOP
    ideal and both predictions."""
    view = pde.explore_merges(skipvit_vit(depth=4), IMAGES[0], 5, 2, CLASSES, 3)
    text = pde.readout(view.summary)
    assert text.startswith("ToMe merges r = 5 tokens in each of the 4 blocks (merged per block: 5, 5, 5, 5)")
    assert "of 50 tokens, 45, 40, 35, 30 are left after blocks 1 to 4" in text
    assert "After block 2 the 49 patches sit in 39 tokens" in text
    assert f"FLOP ideal: {view.summary['flop_ideal_speedup']:.2f}×" in text and "(true class 3)" in text
    assert pde.readout({"error": "r=9 is too large"}) == "Not a valid setting: r=9 is too large"
