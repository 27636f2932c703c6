"""timm's seams through ``MultiExitViT``, on a plain and on a SkipViT-patched backbone: gradient checkpointing and the
backbone's state dict with stock timm. torch.export is not covered: the exit decision sizes the next batch from a
host-side count (data-dependent), so the sample/batch forward does not export; the test says so and skips."""

import copy

import pytest
import timm
import torch
import torch.nn.functional as F

from vitstudy import skipvit
from vitstudy.multiexit import MultiExitViT

SKIP = skipvit.SkipViTSettings((2,), (0.5,), skip_layer=4)


def stock():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4, num_classes=10)


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def backbone(patched: bool):
    return skipvit.apply_skipvit(stock(), SKIP) if patched else stock()


def training_step(model, images):
    """(logits, gradients by name, forward starts per block) of one training step; no image leaves (threshold 1)."""
    calls = [0] * model.depth
    hooks = [
        b.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
        for i, b in enumerate(model.vit.blocks)
    ]
    try:
        model.train().zero_grad()
        logits = model(images).logits
        F.cross_entropy(logits, torch.arange(len(images)) % 10).backward()
    finally:
        for hook in hooks:
            hook.remove()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, calls


@pytest.mark.parametrize("patched", [False, True])
def test_checkpointing_recomputes_each_block(images, patched):
    """set_grad_checkpointing on the exit model (or its backbone) recomputes every block in backward; logits and
    gradients are unchanged, and a patched backbone still drops (its logits are its own forward's)."""
    model = MultiExitViT(backbone(patched), (1, 3), variant="separate", threshold=1.0)
    plain_logits, plain_grads, plain_calls = training_step(model, images)
    model.set_grad_checkpointing(True)
    assert model.vit.grad_checkpointing
    logits, grads, calls = training_step(model, images)
    assert plain_calls == [1] * 4 and calls == [2] * 4
    torch.testing.assert_close(logits, plain_logits)
    assert grads.keys() == plain_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-4, atol=1e-6)
    if patched:
        with torch.no_grad():
            torch.testing.assert_close(logits, model.vit.train()(images))


@pytest.mark.parametrize("patched", [False, True])
def test_backbone_state_dict_round_trip_with_stock_timm(images, patched):
    """The exit model keeps timm's weights under ``vit.``: they load strictly into stock timm and back."""
    model = MultiExitViT(backbone(patched), (1, 3), threshold=1.0).eval()
    fresh = stock().eval()
    fresh.load_state_dict(model.vit.state_dict(), strict=True)
    again = MultiExitViT(copy.deepcopy(fresh), (1, 3), threshold=1.0).eval()
    again.vit.load_state_dict(fresh.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(again(images).logits, fresh(images))


def test_torch_export_of_the_exit_decision_is_not_supported(images):
    """The per-sample forward's batch size after an exit depends on the data, which torch.export cannot trace
    statically; skipped rather than pinned to one torch version's error."""
    model = MultiExitViT(backbone(True), (1, 3), threshold=0.5).eval()
    try:
        torch.export.export(model, (images,))
    except Exception as error:  # the exporter's own error type changes between torch versions
        pytest.skip(f"torch.export does not support the data-dependent exit: {type(error).__name__}")
    pytest.fail("torch.export traced the data-dependent exit: add an exported-vs-eager check here")
