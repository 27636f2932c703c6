"""SkipViT's token maths as pure tensor functions: [CLS]-attention scores, top-k keep, gather, re-insert, fuse.

Shapes: B images, N tokens, C channels, H heads of D channels each.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def cls_attention_scores(q_cls: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """[CLS] attention row averaged over heads: ``softmax(q_cls · kᵀ · scale)`` over keys, mean over heads.

    q_cls: [B, H, D] (the [CLS] query only), k: [B, H, N, D] → [B, N], each row sums to 1. O(N) per image:
    the N×N map is never formed. Computed in float32 (the qkv may be bf16 under autocast).
    """
    logits = (k.float() @ q_cls.float().unsqueeze(-1)).squeeze(-1) * scale  # [B, H, N]
    return logits.softmax(dim=-1).mean(dim=1)


def cls_attention_from_qkv(qkv: torch.Tensor, attn: nn.Module) -> torch.Tensor:
    """Scores [B, N] from a timm ``Attention``'s qkv projection output [B, N, 3·H·D] (its q/k norms applied)."""
    B, N, _ = qkv.shape
    H = attn.num_heads
    D = qkv.shape[-1] // (3 * H)
    q, k, _v = qkv.reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)  # each [B, H, N, D], timm's layout
    q_cls = attn.q_norm(q[:, :, :1])[:, :, 0]  # [B, H, D]; the norms act per token, so one row is enough
    return cls_attention_scores(q_cls, attn.k_norm(k), getattr(attn, "scale", D**-0.5))


def drop_count(ratio: float, tokens: int) -> int:
    """How many of ``tokens`` patch tokens a stage drops: floor(ratio · tokens), leaving at least one."""
    return min(math.floor(ratio * tokens + 1e-9), max(tokens - 1, 0))


def topk_keep_indices(scores: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``keep`` highest-scoring tokens and of the others, each in ascending (original) order.

    scores: [B, N] → (kept [B, keep], dropped [B, N - keep]). Ties go to the earlier token (stable sort).
    """
    order = scores.argsort(dim=1, descending=True, stable=True)  # [B, N]
    kept, dropped = order[:, :keep], order[:, keep:]
    return kept.sort(dim=1).values, dropped.sort(dim=1).values


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Tokens of each image at ``index``: x [B, N, C], index [B, K] → [B, K, C]. Also works on [B, N] tensors."""
    if x.ndim == 2:
        return x.gather(1, index)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def reinsert_tokens(x: torch.Tensor, positions: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """Put every token back at its original position: x [B, K, C], positions [B, K] → [B, length, C].

    ``positions`` holds each token's index in the original sequence; together they must cover 0 … length-1
    exactly once (``length`` defaults to K). Differentiable with respect to ``x``.
    """
    B, K, C = x.shape
    length = K if length is None else length
    out = x.new_zeros(B, length, C)
    return out.scatter(1, positions.unsqueeze(-1).expand(-1, -1, C), x)


def fuse_tokens(x: torch.Tensor, weights: torch.Tensor, normalise: bool = False) -> torch.Tensor:
    """EViT's fused token: Σ weight · token over tokens x [B, M, C] with weights [B, M] → [B, 1, C].

    EViT's code sums the dropped tokens weighted by their raw [CLS] attention, which sums to less than 1
    (youweiliang/evit, evit.py Block.forward: ``torch.sum(non_topk * non_topk_attn.unsqueeze(-1), dim=1)``);
    ``normalise=True`` renormalises the weights to sum to 1 (the paper's "weighted average").
    """
    if normalise:
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return (weights.unsqueeze(-1).to(x.dtype) * x).sum(dim=1, keepdim=True)
