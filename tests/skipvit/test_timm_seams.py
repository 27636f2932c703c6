"""timm's seams on a SkipViT-patched ViT: gradient checkpointing, forward_intermediates, reset_classifier, the state
dict both ways and torch.export, each against stock timm or the patched model's own forward."""

import copy

import pytest
import timm
import torch
import torch.nn.functional as F

from vitstudy import skipvit
from vitstudy.skipvit import SkipViTSettings

SKIP = SkipViTSettings((2,), (0.5,), skip_layer=4)
FUSED = SkipViTSettings((2,), (0.5,), mode="fused")  # dropped inside block 2, after its attention


def stock(**kwargs):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4, num_classes=10, **kwargs)


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def training_step(model, images, count=False):
    """One training forward + backward; returns (logits, gradients by name, forward calls per block).

    Calls are counted when a forward starts: the non-reentrant recompute stops as soon as backward has what it
    needs, so a block's forward hook does not fire on the recompute (in stock timm either)."""
    calls = [0] * len(model.blocks)
    hooks = [
        b.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, b in enumerate(model.blocks)
    ]
    try:
        model.train().zero_grad()
        logits = model(images)
        F.cross_entropy(logits, torch.arange(len(images)) % 10).backward()
    finally:
        for hook in hooks:
            hook.remove()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, calls


def test_checkpointing_recomputes_each_block_and_still_drops(images):
    """With set_grad_checkpointing each block runs twice in a training step (the recompute in backward), once without;
    logits and gradients are the same either way, and they are the dropping forward's, not stock timm's."""
    model = skipvit.apply_skipvit(stock(drop_path_rate=0.0), SKIP)
    plain_logits, plain_grads, plain_calls = training_step(model, images)
    model.set_grad_checkpointing(True)
    logits, grads, calls = training_step(model, images)
    assert plain_calls == [1] * 4 and calls == [2] * 4
    torch.testing.assert_close(logits, plain_logits)
    assert grads.keys() == plain_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-4, atol=1e-6)
    with skipvit.dropping(model, False):
        assert not torch.allclose(training_step(model, images)[0], logits, atol=1e-4)


def test_checkpointing_with_the_drop_inside_a_block(images):
    """Mode "fused" splits block 2 at its attention: both halves are checkpointed, gradients unchanged."""
    model = skipvit.apply_skipvit(stock(), FUSED)
    plain_logits, plain_grads, _ = training_step(model, images)
    model.set_grad_checkpointing(True)
    logits, grads, calls = training_step(model, images)
    assert calls == [2, 0, 2, 2]  # block 2 runs as its two halves, never through its own forward
    torch.testing.assert_close(logits, plain_logits)
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("training", [False, True])
def test_forward_intermediates_drop_as_forward_features(images, training):
    """NLC intermediates are each block's own output sequence: all patches before the drop, the kept ones after it,
    all again from the skip layer on; the final features are forward_features'. NCHW has no grid then: refused."""
    model = skipvit.apply_skipvit(stock(), SKIP).train(training)
    outputs = {}
    hooks = [
        b.norm1.register_forward_pre_hook(lambda _m, a, i=i: outputs.__setitem__(i, a[0]))
        for i, b in enumerate(model.blocks)
    ]
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(images, output_fmt="NLC", return_prefix_tokens=True)
        for hook in hooks:
            hook.remove()
        torch.testing.assert_close(final, model.forward_features(images))
    assert [y.shape[1] for y, _ in intermediates] == [16, 8, 8, 16]  # 16 patches, half dropped after block 2
    for k in (0, 1):  # block k+1's output is block k+2's input, except at the skip layer 4 (re-inserted)
        torch.testing.assert_close(torch.cat(intermediates[k][::-1], 1), outputs[k + 1])
    with pytest.raises(ValueError, match="output_fmt='NCHW'.*set_dropping"):
        model.forward_intermediates(images)


def test_forward_intermediates_with_dropping_off_are_stock_timms(images):
    reference = stock().eval()
    model = skipvit.apply_skipvit(copy.deepcopy(reference), SKIP).eval()
    skipvit.set_dropping(model, False)
    with torch.no_grad():
        ours, theirs = model.forward_intermediates(images), reference.forward_intermediates(images)
    torch.testing.assert_close(ours[0], theirs[0])
    for a, b in zip(ours[1], theirs[1]):
        torch.testing.assert_close(a, b)


def test_reset_classifier_keeps_dropping(images):
    """timm's reset_classifier gives a new head; the features still come from the dropping forward."""
    model = skipvit.apply_skipvit(stock(), SKIP).eval()
    model.reset_classifier(5)
    with torch.no_grad():
        logits = model(images)
        tokens = skipvit.skipvit_blocks(model.blocks, skipvit.patch.forward_start(model, images), SKIP)
        torch.testing.assert_close(logits, model.forward_head(model.norm(tokens)))
    assert logits.shape == (4, 5)


def test_state_dict_round_trip_with_stock_timm(images):
    """The patch adds no weight: its state dict loads strictly into stock timm and back, same outputs undropped."""
    model = skipvit.apply_skipvit(stock(), SKIP).eval()
    fresh = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4, num_classes=10).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    back = skipvit.apply_skipvit(copy.deepcopy(fresh), SKIP).eval()
    back.load_state_dict(fresh.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(back(images), model(images))
        with skipvit.dropping(model, False):
            torch.testing.assert_close(fresh(images), model(images))


def test_torch_export_drops_tokens(images):
    """Shapes are static (the drop counts depend on the settings only), so the patched model exports as a whole."""
    model = skipvit.apply_skipvit(stock(), SKIP).eval()
    exported = torch.export.export(model, (images,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(images), model(images))
