"""vitstudy.tome is ToMe's computation: checked against a transcription of facebookresearch/ToMe's own code on the
same tensors (commit af95e4b1befa172dadccd8c81e223b10090f9579).

Transcribed: tome/merge.py ``bipartite_soft_matching`` (lines 18-97, its ``merge``; ``unmerge`` is not used here),
``merge_wavg`` (lines 210-224) and ``merge_source`` (lines 227-239); tome/utils.py ``parse_r`` (lines 80-105);
tome/patch/timm.py ``ToMeBlock.forward`` (lines 34-56) and ``ToMeAttention.forward`` (lines 66-96), written against a
timm Block's own modules (ToMe's attention is timm's with q·k computed by hand, log(size) added and k returned), and
``ToMeVisionTransformer.forward`` (lines 106-111: the r schedule and the size / source reset per forward)."""

from __future__ import annotations

import math

import pytest
import torch

from vitstudy import tome
from vitstudy.models import forward_start


def do_nothing(x, mode=None):
    return x


def reference_matching(metric, r, class_token=False, distill_token=False):
    """merge.py lines 18-97 (bipartite_soft_matching), returning its merge function."""
    protected = 0
    if class_token:
        protected += 1
    if distill_token:
        protected += 1
    t = metric.shape[1]
    r = min(r, (t - protected) // 2)
    if r <= 0:
        return do_nothing
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[..., ::2, :], metric[..., 1::2, :]
        scores = a @ b.transpose(-1, -2)
        if class_token:
            scores[..., 0, :] = -math.inf
        if distill_token:
            scores[..., :, 0] = -math.inf
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx = edge_idx[..., r:, :]
        src_idx = edge_idx[..., :r, :]
        dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
        if class_token:
            unm_idx = unm_idx.sort(dim=1)[0]

    def merge(x, mode="mean"):
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)
        if distill_token:
            return torch.cat([unm[:, :1], dst[:, :1], unm[:, 1:], dst[:, 1:]], dim=1)
        return torch.cat([unm, dst], dim=1)

    return merge


def reference_merge_wavg(merge, x, size=None):
    """merge.py lines 210-224."""
    if size is None:
        size = torch.ones_like(x[..., 0, None])
    x = merge(x * size, mode="sum")
    size = merge(size, mode="sum")
    x = x / size
    return x, size


def reference_merge_source(merge, x, source=None):
    """merge.py lines 227-239."""
    if source is None:
        n, t, _ = x.shape
        source = torch.eye(t, device=x.device)[None, ...].expand(n, t, t)
    return merge(source, mode="amax")


def reference_parse_r(num_layers, r):
    """utils.py lines 80-105."""
    inflect = 0
    if isinstance(r, list):
        if len(r) < num_layers:
            r = r + [0] * (num_layers - len(r))
        return list(r)
    elif isinstance(r, tuple):
        r, inflect = r
    min_val = int(r * (1.0 - inflect))
    max_val = 2 * r - min_val
    step = (max_val - min_val) / (num_layers - 1)
    return [int(min_val + step * i) for i in range(num_layers)]


def reference_attention(attn, x, size):
    """timm.py lines 66-96 (ToMeAttention.forward) on a timm Attention's modules."""
    B, N, C = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = (q @ k.transpose(-2, -1)) * attn.scale
    if size is not None:
        scores = scores + size.log()[:, None, None, :, 0]
    scores = scores.softmax(dim=-1)
    scores = attn.attn_drop(scores)
    x = (scores @ v).transpose(1, 2).reshape(B, N, C)
    x = attn.proj(x)
    x = attn.proj_drop(x)
    return x, k.mean(1)


def reference_block(block, x, info):
    """timm.py lines 34-56 (ToMeBlock.forward) on a timm Block's modules; ``info`` is ToMe's ``_tome_info``."""
    attn_size = info["size"] if info["prop_attn"] else None
    x_attn, metric = reference_attention(block.attn, block.norm1(x), attn_size)
    x = x + block.drop_path1(x_attn)
    r = info["r"].pop(0)
    if r > 0:
        merge = reference_matching(metric, r, info["class_token"], info["distill_token"])
        if info["trace_source"]:
            info["source"] = reference_merge_source(merge, x, info["source"])
        x, info["size"] = reference_merge_wavg(merge, x, info["size"])
    return x + block.drop_path2(block.mlp(block.norm2(x)))


def reference_forward(model, batch, r, prop_attn=True):
    """timm.py lines 106-111 then timm's forward over the ToMe blocks: (logits, final size, final source)."""
    info = {
        "r": reference_parse_r(len(model.blocks), r),
        "size": None,
        "source": None,
        "trace_source": True,
        "prop_attn": prop_attn,
        "class_token": True,
        "distill_token": False,
    }
    x = forward_start(model, batch)
    for block in model.blocks:
        x = reference_block(block, x, info)
    return model.forward_head(model.norm(x)), info["size"], info["source"]


def _tensors(tokens=50, batch=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    metric = torch.randn(batch, tokens, 16, generator=generator)
    return metric, torch.randn(batch, tokens, 32, generator=generator)


@pytest.mark.parametrize("r", [1, 7, 24, 40])  # 40: capped at (50 - 1) // 2 = 24, as ToMe caps it
def test_matching_and_weighted_merge_equal_tome(r):
    """Same metric and tokens: the same merged tokens, sizes and sources, bit for bit, with a [CLS] token."""
    metric, x = _tensors()
    theirs = reference_matching(metric, r, class_token=True)
    ours = tome.bipartite_soft_matching(metric, r, protected=1)
    size = torch.randint(1, 4, (4, 50, 1)).float()
    for s in (None, size):
        for got, want in zip(tome.merge_wavg(ours.merge, x, s), reference_merge_wavg(theirs, x, s)):
            assert torch.equal(got, want)
    assert torch.equal(tome.merge_source(ours.merge, x), reference_merge_source(theirs, x))


def test_distillation_token_is_protected_as_tome_protects_it():
    """Two prefix tokens ([CLS] and distillation, DeiT's): ToMe's order and values, bit for bit."""
    metric, x = _tensors(tokens=51)
    theirs = reference_matching(metric, 12, class_token=True, distill_token=True)
    ours = tome.bipartite_soft_matching(metric, 12, protected=2)
    for got, want in zip(tome.merge_wavg(ours.merge, x), reference_merge_wavg(theirs, x)):
        assert torch.equal(got, want)


def test_too_few_tokens_merge_nothing():
    """r capped to 0 (a lone [CLS] and one patch): ToMe returns do_nothing, this package no matching."""
    metric, _ = _tensors(tokens=2)
    assert reference_matching(metric, 3, class_token=True) is do_nothing
    assert tome.bipartite_soft_matching(metric, 3, protected=1) is None


@pytest.mark.parametrize("r", [0, 5, (5, -1), (5, -0.5), (6, 1.0), (3, 0.25), [4, 0, 2], list(range(12))])
def test_schedule_equals_tome(r):
    """parse_r: ints, (r, inflection) and per-block lists give ToMe's schedule over 12 blocks."""
    assert tome.parse_r(12, r) == reference_parse_r(12, r)


@pytest.mark.parametrize("r", [4, (4, -1), [0, 8, 0, 3]])
def test_patched_model_equals_tome_on_the_same_weights(fresh_vit, batch, r):
    """A patched tiny ViT gives the logits, sizes and sources of ToMe's blocks run over the same weights (timm's
    fused attention with log(size) as a mask against ToMe's hand-written softmax: equal to float rounding)."""
    model = tome.apply_tome(fresh_vit(), r)
    with torch.no_grad():
        want, want_size, want_source = reference_forward(model, batch, r)
        got, state = tome.trace_forward(model, batch)
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert torch.equal(state.size, want_size) and torch.equal(state.source, want_source)
