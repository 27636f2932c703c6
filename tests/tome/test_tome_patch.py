"""ToMe on a timm ViT (vitstudy.tome.patch): r = 0 is timm bit for bit, the schedule sets the token counts, the state
dict and timm's classifier seams are untouched, bad input is one line."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from vitstudy import skipvit, tome


def test_r_zero_is_timm_bit_for_bit(fresh_vit, batch):
    """Patched with r = 0, and set back to 0 after merging, the forward is timm's own: torch.equal in eval."""
    plain, patched = fresh_vit(), tome.apply_tome(fresh_vit())
    with torch.no_grad():
        want = plain(batch)
        assert torch.equal(patched(batch), want)
        patched.r = 4
        assert not torch.allclose(patched(batch), want)
        patched.r = 0
        assert torch.equal(patched(batch), want)


@pytest.mark.parametrize("r", [3, (4, -1), (4, 1.0), [0, 0, 10, 0, 5], 30])
def test_token_counts_follow_the_schedule(fresh_vit, batch, r):
    """Tokens entering each block, and after the last, are token_counts of the schedule (30: capped at half)."""
    model = tome.apply_tome(fresh_vit(), r)
    logits, state = tome.trace_forward(model, batch)
    assert [*state.counts, state.x.shape[1]] == tome.token_counts(50, tome.parse_r(12, r))
    with torch.no_grad():
        assert torch.equal(logits, model(batch))


def test_every_patch_lives_in_exactly_one_token(fresh_vit, batch):
    """Sizes sum to the 50 tokens, each source row counts its size, and the groups partition the 49 patches."""
    model = tome.apply_tome(fresh_vit(), 5)
    _, state = tome.trace_forward(model, batch)
    assert torch.equal(state.size.sum(dim=1).flatten(), torch.full((3,), 50.0))
    assert torch.equal(state.source.sum(dim=-1, keepdim=True), state.size)
    assert torch.equal(state.source.sum(dim=1), torch.ones(3, 50))
    for groups in tome.merge_groups(state.source):
        assert sorted(p for group in groups for p in group) == list(range(49))


def test_prefix_tokens_are_never_merged(fresh_vit, batch):
    """With [CLS] and 2 registers, the 3 prefix tokens stay first, each its own source, at every r."""
    model = tome.apply_tome(fresh_vit(reg_tokens=2), 30)
    _, state = tome.trace_forward(model, batch)
    assert torch.equal(state.source[:, :3], torch.eye(52)[:3].expand(3, 3, 52))
    assert state.x.shape[1] == tome.token_counts(52, tome.parse_r(12, 30), protected=3)[-1]


def test_a_model_without_class_token_merges_every_token(fresh_vit, batch):
    """class_token=False, average pooling: nothing protected, all 49 patch tokens mergeable."""
    model = tome.apply_tome(fresh_vit(class_token=False, global_pool="avg"), 4)
    logits, state = tome.trace_forward(model, batch)
    assert logits.shape == (3, 10)
    assert state.x.shape[1] == tome.token_counts(49, tome.parse_r(12, 4), protected=0)[-1]


def test_proportional_attention_changes_the_output(fresh_vit, batch):
    """prop_attn weighs keys by size: on and off differ once tokens are merged."""
    model = tome.apply_tome(fresh_vit(), 4)
    with torch.no_grad():
        on = model(batch)
        model.prop_attn = False
        assert not torch.allclose(model(batch), on)


def test_state_dict_round_trips_with_timm(fresh_vit, batch):
    """The patch adds no state: the keys and tensors are timm's, and weights move both ways."""
    plain, patched = fresh_vit(), tome.apply_tome(fresh_vit(), 4)
    assert list(patched.state_dict()) == list(plain.state_dict())
    torch.manual_seed(1)
    other = timm.create_model("vitstudy_tiny_patch4_28").eval()
    patched.load_state_dict(other.state_dict())
    plain.load_state_dict(patched.state_dict())
    with torch.no_grad(), tome.merging(patched, 0):
        assert torch.equal(patched(batch), other(batch))
        assert torch.equal(plain(batch), other(batch))


def test_reset_classifier_and_r_after_patching(fresh_vit, batch):
    """timm's reset_classifier works on the patched class; r set after patching takes effect on the next forward."""
    model = tome.apply_tome(fresh_vit())
    model.reset_classifier(3)
    model.r = (6, -1)
    with torch.no_grad():
        assert model(batch).shape == (3, 3)
    assert model.tome_schedule == tome.parse_r(12, (6, -1))


def test_merging_restores_r_and_remove_gives_timm_back(fresh_vit, batch):
    """merging() restores r on exit; remove_tome leaves the stock class, its hooks and attributes gone."""
    plain, model = fresh_vit(), tome.apply_tome(fresh_vit(), [2, 2])
    with tome.merging(model, 0):
        assert model.r == 0
    assert model.r == [2, 2]
    tome.remove_tome(model)
    assert type(model) is type(plain) and not hasattr(model, "prop_attn")
    assert all(not block.attn.qkv._forward_hooks for block in model.blocks)
    with torch.no_grad():
        assert torch.equal(model(batch), plain(batch))


@pytest.mark.parametrize(
    ("r", "message"),
    [
        (-1, "r=-1 is not allowed"),
        (2.5, "r=2.5 is not allowed"),
        ((3, 2.0), "inflection in [-1, 1]"),
        ([1, -2], "integers >= 0"),
        ([1] * 13, "the model has 12 blocks"),
    ],
)
def test_bad_r_is_one_line_naming_the_value(fresh_vit, r, message):
    """At patch time and when set later, a bad r is refused in one line and the old r stays."""
    with pytest.raises(ValueError, match="^[^\n]*$") as raised:
        tome.apply_tome(fresh_vit(), r)
    assert message in str(raised.value)
    model = tome.apply_tome(fresh_vit(), 2)
    with pytest.raises(ValueError, match="not allowed|blocks"):
        model.r = r
    assert model.r == 2


def test_non_vit_and_intermediates_while_merging_are_refused(fresh_vit, batch):
    """A non-ViT is a TypeError naming its class; forward_intermediates is refused while merging, timm's at r = 0."""
    with pytest.raises(TypeError, match="Linear is not a timm VisionTransformer"):
        tome.apply_tome(nn.Linear(2, 2))
    model = tome.apply_tome(fresh_vit(), 4)
    with pytest.raises(ValueError, match="set model.r = 0"):
        model.forward_intermediates(batch)
    model.r = 0
    final, intermediates = model.forward_intermediates(batch)
    assert len(intermediates) == 12


def test_training_backward_and_checkpointing_agree(fresh_vit, batch):
    """Merging trains (gradients reach the first block), and timm's gradient checkpointing gives the same gradients."""
    grads = []
    for checkpointed in (False, True):
        model = tome.apply_tome(fresh_vit(depth=4), 6).train()
        model.set_grad_checkpointing(checkpointed)
        model(batch).logsumexp(-1).sum().backward()
        grads.append(model.blocks[0].attn.qkv.weight.grad)
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6, rtol=0)


def test_blocks_of_an_unpatched_model_are_refused_in_one_line(fresh_vit, batch):
    """tome_blocks reads the keys through the captures apply_tome places: plain timm blocks are named as the cause."""
    model = fresh_vit(depth=2)
    with pytest.raises(TypeError, match="patched by apply_tome"):
        tome.tome_blocks(model.blocks, model.patch_embed(batch), [2, 2])


def test_a_skipvit_model_is_refused(fresh_vit):
    """ToMe and SkipViT each run the blocks themselves: patching a SkipViT model is refused, naming the way out."""
    with pytest.raises(TypeError, match="remove_skipvit"):
        tome.apply_tome(skipvit.apply_skipvit(fresh_vit(depth=2)), 2)
