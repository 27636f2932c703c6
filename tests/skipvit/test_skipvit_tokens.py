"""SkipViT token maths: pure tensor functions against reference answers."""

from __future__ import annotations

import torch

from vitstudy import skipvit as sv


def test_reinsert_inverts_gather():
    """Gathering kept and dropped tokens and re-inserting them restores the original sequence."""
    x = torch.randn(2, 9, 4)
    keep, drop = sv.topk_keep_indices(torch.rand(2, 9), 5)
    pieces = torch.cat([sv.gather_tokens(x, keep), sv.gather_tokens(x, drop)], 1)
    assert torch.equal(sv.reinsert_tokens(pieces, torch.cat([keep, drop], 1)), x)


def test_fused_token_is_the_raw_weighted_sum():
    """fuse_tokens is Σ weight · token with the weights as given (EViT's code does not renormalise them)."""
    tokens = torch.randn(2, 5, 3)
    weights = torch.rand(2, 5)
    torch.testing.assert_close(sv.fuse_tokens(tokens, weights), (tokens * weights[..., None]).sum(1, keepdim=True))


def test_fused_token_normalised_is_the_weighted_average():
    """With normalise=True, fuse_tokens is the average of the tokens weighted by their normalised weights."""
    tokens = torch.randn(2, 5, 3)
    weights = torch.rand(2, 5)
    expected = (tokens * (weights / weights.sum(1, keepdim=True))[..., None]).sum(1, keepdim=True)
    torch.testing.assert_close(sv.fuse_tokens(tokens, weights, normalise=True), expected)


def test_topk_keeps_the_highest_scores_in_original_order_ties_to_the_earlier():
    """Kept: the top scores in ascending index order; a tie goes to the earlier token."""
    kept, dropped = sv.topk_keep_indices(torch.tensor([[0.1, 0.5, 0.2, 0.5, 0.9]]), 3)
    assert kept.tolist() == [[1, 3, 4]] and dropped.tolist() == [[0, 2]]
    kept, _ = sv.topk_keep_indices(torch.tensor([[0.3, 0.3, 0.3]]), 1)
    assert kept.tolist() == [[0]]


def test_drop_count_floors_and_leaves_one_token():
    """floor(r · n) tokens drop (30% of 16 is 4), and never all of them."""
    assert [sv.drop_count(0.3, 16), sv.drop_count(0.55, 49), sv.drop_count(0.99, 3)] == [4, 26, 2]


def test_cls_scores_match_timm_explicit_attention_map(tiny_vit, images):
    """CLS scores equal row 0 of timm's own (non-fused) attention map, averaged over heads."""
    model, x = tiny_vit(), images()
    attn = model.blocks[5].attn
    attn.fused_attn = False  # timm's explicit path: its attn_drop receives the full softmax map
    maps, qkv = {}, {}
    attn.attn_drop.register_forward_hook(lambda m, i, o: maps.__setitem__("attn", i[0]))
    attn.qkv.register_forward_hook(lambda m, i, o: qkv.__setitem__("out", o))
    with torch.no_grad():
        model(x)
    reference = maps["attn"][:, :, 0, :].mean(1)  # [B, N] from the [B, H, N, N] map
    torch.testing.assert_close(sv.cls_attention_from_qkv(qkv["out"], attn), reference)
