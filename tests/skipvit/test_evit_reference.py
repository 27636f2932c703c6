"""The fused-token row is EViT's computation: checked against a transcription of youweiliang/evit's own code on the
same tensors (commit 5ca95a7cf4a8637193284895c5bc0dd9dc365982).

Transcribed: evit.py ``Attention.forward`` (lines 192-225: attention, then the [CLS] row of the head-averaged
attention ranks the patches, ``left_tokens = ceil(keep_rate * (N - 1))`` kept by ``topk``), evit.py
``Block.forward`` (lines 245-268: the residual after attention, then kept tokens + ``extra_token = sum(non_topk *
non_topk_attn)`` with raw attention weights, then the MLP on what is left) and helpers.py ``complement_idx``
(lines 52-72), written against a timm Block's own modules (EViT's Attention has the same qkv / proj layout)."""

from __future__ import annotations

import math

import torch

from vitstudy import skipvit as sv


def complement_idx(idx: torch.Tensor, dim: int) -> torch.Tensor:
    """helpers.py lines 52-72: set(range(dim)) - set(idx) along the last dimension, ascending."""
    a = torch.arange(dim, device=idx.device)
    ndim = idx.ndim
    dims = idx.shape
    n_idx = dims[-1]
    dims = dims[:-1] + (-1,)
    for _ in range(1, ndim):
        a = a.unsqueeze(0)
    a = a.expand(*dims)
    masked = torch.scatter(a, -1, idx, 0)
    compl, _ = torch.sort(masked, dim=-1, descending=False)
    compl = compl.permute(-1, *tuple(range(ndim - 1)))
    return compl[n_idx:].permute(*(tuple(range(1, ndim)) + (0,)))


def evit_attention(block, x, keep_rate):
    """evit.py Attention.forward (lines 192-225) on a timm block's attention weights; x is norm1's output."""
    attn_module = block.attn
    B, N, C = x.shape
    qkv = attn_module.qkv(x).reshape(B, N, 3, attn_module.num_heads, C // attn_module.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)) * attn_module.scale
    attn = attn.softmax(dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(B, N, C)
    x = attn_module.proj(x)
    left_tokens = math.ceil(keep_rate * (N - 1))
    cls_attn = attn[:, :, 0, 1:].mean(dim=1)  # [B, N-1]
    _, idx = torch.topk(cls_attn, left_tokens, dim=1, largest=True, sorted=True)
    index = idx.unsqueeze(-1).expand(-1, -1, C)
    return x, index, idx, cls_attn, left_tokens


def evit_block(block, x, keep_rate):
    """evit.py Block.forward (lines 245-268) with fuse_token=True."""
    B, N, C = x.shape
    tmp, index, idx, cls_attn, left_tokens = evit_attention(block, block.norm1(x), keep_rate)
    x = x + tmp
    non_cls = x[:, 1:]
    x_others = torch.gather(non_cls, dim=1, index=index)
    compl = complement_idx(idx, N - 1)
    non_topk = torch.gather(non_cls, dim=1, index=compl.unsqueeze(-1).expand(-1, -1, C))
    non_topk_attn = torch.gather(cls_attn, dim=1, index=compl)
    extra_token = torch.sum(non_topk * non_topk_attn.unsqueeze(-1), dim=1, keepdim=True)
    x = torch.cat([x[:, 0:1], x_others, extra_token], dim=1)
    return x + block.mlp(block.norm2(x)), idx, extra_token


def _tokens(model, images):
    return model._pos_embed(model.patch_embed(images))


def test_fused_row_equals_evit_on_the_same_tensors(tiny_vit, images):
    """Table 1's fused row (6 / 45 %) gives EViT's [CLS] output and EViT's fused token on the same weights."""
    model, x = sv.apply_skipvit(tiny_vit(), "fused_6_45"), images()
    tokens = _tokens(model, x)
    with torch.no_grad():
        ours = sv.skipvit_blocks(model.blocks, tokens, sv.TABLE1["fused_6_45"], model.num_prefix_tokens)
        theirs = tokens
        for layer, block in enumerate(model.blocks, start=1):
            theirs = evit_block(block, theirs, 1 - 0.45)[0] if layer == 6 else block(theirs)
    # EViT keeps the tokens in score order, this package in their original order: the blocks after the drop are
    # permutation-equivariant, so [CLS] and the fused token (last in both) must agree.
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[:, -1], theirs[:, -1], rtol=1e-5, atol=1e-5)
    assert ours.shape == theirs.shape


def test_kept_set_and_fused_token_equal_evit_at_the_drop_block(tiny_vit, images):
    """At block 6: the same kept patches and the same fused token (after the block's MLP) as EViT's Block.forward."""
    model, x = sv.apply_skipvit(tiny_vit(), "fused_6_45"), images()
    with torch.no_grad():
        tokens = _tokens(model, x)
        for block in model.blocks[:5]:
            tokens = block(tokens)
        theirs, idx, _ = evit_block(model.blocks[5], tokens, 1 - 0.45)
        trace: list[sv.Stage] = []
        one_block = sv.SkipViTSettings((1,), (0.45,), mode="fused")  # block 6 alone: its drop layer is 1
        ours = sv.skipvit_blocks(model.blocks[5:6], tokens, one_block, model.num_prefix_tokens, trace)
    assert torch.equal(trace[0].kept, idx.sort(dim=1).values)
    torch.testing.assert_close(ours[:, -1], theirs[:, -1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], rtol=1e-5, atol=1e-6)


def test_normalised_variant_differs_from_evit(tiny_vit, images):
    """The renormalised, after-the-block variant is a different computation (kept as a named option)."""
    model, x = tiny_vit(), images()
    evit = sv.apply_skipvit(model, "fused_6_45")(x)
    variant = sv.SkipViTSettings((6,), (0.45,), mode="fused", placement="block", fuse_weights="normalised")
    assert variant.label == "6 / 45% / fused token (selected after the block, normalised weights)"
    assert not torch.allclose(sv.configure(model, variant)(x), evit)
