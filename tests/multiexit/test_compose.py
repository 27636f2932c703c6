"""Both methods at once: ``MultiExitViT`` over a SkipViT-patched backbone drops tokens as SkipViT's own forward does.

Pinned against the patched timm model itself: its logits when no image leaves, its blocks' own inputs at every
exit, its FLOP count (the product rule), and the per-sample invariant (batched == each image alone).
"""

import copy

import pytest
import torch

from vitstudy import bench, skipvit
from vitstudy.models import create_model
from vitstudy.multiexit import MultiExitViT, SkipExitViT, confidence, exit_costs
from vitstudy.skipvit import SkipViTSettings, TokenState

DEPTH = 6
EXITS = (1, 3, 5)  # before the drop region, inside it (dropped tokens held aside), after the skip layer
INPUT = (1, 28, 28)
SETTINGS = {
    "skip": SkipViTSettings((2,), (0.5,), skip_layer=5),
    "skip_two_stages": SkipViTSettings((2, 3), (0.3, 0.3), skip_layer=5),
    "fused": SkipViTSettings((2,), (0.5,), mode="fused"),
    "drop": SkipViTSettings((2,), (0.5,), mode="drop"),
}


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_model("vitstudy_tiny_patch4_28", depth=DEPTH).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(8, *INPUT, generator=torch.Generator().manual_seed(1))


def patched(vit, settings):
    return skipvit.apply_skipvit(copy.deepcopy(vit), settings).eval()


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("policy", ["sample", "batch"])
def test_no_exit_firing_equals_skipvits_own_forward(vit, images, name, policy):
    """With no image confident enough, the composed logits are the patched timm model's, and they differ from the
    backbone without dropping (the dropping really runs inside the exit model)."""
    backbone = patched(vit, SETTINGS[name])
    model = MultiExitViT(backbone, EXITS, threshold=1.0, policy=policy).eval()
    with torch.inference_mode():
        out = model(images)
        torch.testing.assert_close(out.logits, backbone(images), rtol=0, atol=1e-6)
        assert not torch.allclose(out.logits, vit(images), atol=1e-4)
    assert (out.exit_block == DEPTH).all()


def test_skip_exit_vit_is_the_composition_and_refuses_an_unpatched_backbone(vit, images):
    """SkipExitViT is MultiExitViT with a patched backbone required; an unpatched one is one clear line."""
    backbone = patched(vit, SETTINGS["skip"])
    with torch.inference_mode():
        out = SkipExitViT(backbone, EXITS, threshold=1.0).eval()(images)
        torch.testing.assert_close(out.logits, backbone(images), rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match="apply_skipvit"):
        SkipExitViT(copy.deepcopy(vit), EXITS)


def test_dropping_off_is_the_plain_exit_model(vit, images):
    """A patched backbone with dropping switched off runs the plain blocks: the unpatched exit model's outputs."""
    backbone = patched(vit, SETTINGS["skip"])
    skipvit.set_dropping(backbone, False)
    with torch.inference_mode():
        out = MultiExitViT(backbone, EXITS, threshold=1.0).eval()(images)
        torch.testing.assert_close(out.logits, vit(images), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["skip", "skip_two_stages", "fused"])
def test_each_exit_sees_the_sequence_its_depth_sees(vit, images, name):
    """The tokens after block k are the input SkipViT's own forward feeds block k+1 (captured by a pre-hook on
    that block's norm1, which mode "fused" calls too): fewer inside the drop region, all again after the skip layer;
    each exit's confidence is its head on those tokens."""
    backbone = patched(vit, SETTINGS[name])
    seen: dict[int, torch.Tensor] = {}
    hooks = [
        backbone.blocks[k].norm1.register_forward_pre_hook(lambda _m, args, k=k: seen.__setitem__(k, args[0]))
        for k in EXITS
    ]
    try:
        with torch.inference_mode():
            backbone(images)
    finally:
        for hook in hooks:
            hook.remove()
    model = MultiExitViT(backbone, EXITS, threshold=1.0).eval()
    with torch.inference_mode():
        out = model(images)
        tokens, done = model.start(images), 0
        for column, k in enumerate(EXITS):
            tokens, done = model.run_blocks(tokens, done, k), k
            assert isinstance(tokens, TokenState)
            torch.testing.assert_close(tokens.x, seen[k], rtol=0, atol=1e-6)
            logits = model.exit_heads[column](model.exit_features(seen[k]))
            torch.testing.assert_close(out.confidence[:, column], confidence(logits), rtol=0, atol=1e-6)
    full = 1 + 49
    assert seen[1].shape[1] == full and seen[3].shape[1] < full
    if name.startswith("skip"):
        assert seen[5].shape[1] == full  # the skip layer (block 5) got the held tokens back


def test_a_tensor_inside_the_drop_region_is_refused(vit, images):
    """Between exits the dropped tokens travel in the TokenState; a bare tensor past a drop layer is refused."""
    model = MultiExitViT(patched(vit, SETTINGS["skip"]), EXITS)
    with torch.inference_mode():
        state = model.run_blocks(model.start(images), 0, 3)
        with pytest.raises(ValueError, match="TokenState"):
            model.run_blocks(state.x, 3, 5)


def test_flops_follow_the_product_rule(vit):
    """Counted per piece, the composition costs what SkipViT's blocks cost: a forced exit costs the blocks it runs
    on the tokens SkipViT leaves them (measured on the whole model), an exit before the drop region costs what it
    costs without SkipViT, and running to the end costs the plain model over SkipViT's FLOP ideal (notebook 10's
    ``composed_ideal`` rule) plus the exit heads passed."""
    backbone = patched(vit, SETTINGS["skip"])
    composed = MultiExitViT(backbone, EXITS)
    costs = exit_costs(composed, INPUT)
    plain_costs = exit_costs(MultiExitViT(copy.deepcopy(vit), EXITS), INPUT)
    for k in EXITS:
        composed.forced_exit = k
        assert bench.flops_per_image(composed, INPUT) == pytest.approx(costs.forced(k), rel=1e-9)
    composed.forced_exit = None
    assert costs.forced(1) == pytest.approx(plain_costs.forced(1), rel=1e-9)
    assert costs.forced(3) < plain_costs.forced(3)
    gain = skipvit.flop_gain(backbone, INPUT)
    skip_ideal = gain["gflops_off"] / gain["gflops_on"]
    assert costs.plain() == pytest.approx(gain["gflops_on"] * 1e9, rel=1e-9)
    end = plain_costs.plain() / skip_ideal + len(EXITS) * plain_costs.exit_head
    assert costs.per_exit(EXITS)[-1].item() == pytest.approx(end, rel=1e-9)


@pytest.mark.parametrize("name", ["skip", "fused"])
def test_per_sample_exit_equals_running_each_image_alone(vit, images, name):
    """Exiting per image inside a batch gives each image what it gets alone, with exits inside the drop region."""
    model = MultiExitViT(patched(vit, SETTINGS[name]), EXITS, policy="sample").eval()
    with torch.inference_mode():
        model.threshold = model(images).confidence[:, 1].median().item()  # some leave at block 3, inside the region
        batch = model(images)
        alone = [model(images[i : i + 1]) for i in range(len(images))]
    assert 0 < (batch.exit_block <= 3).sum() < len(images)
    assert torch.equal(batch.exit_block, torch.cat([a.exit_block for a in alone]))
    torch.testing.assert_close(batch.logits, torch.cat([a.logits for a in alone]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch.confidence, torch.cat([a.confidence for a in alone]), equal_nan=True)
