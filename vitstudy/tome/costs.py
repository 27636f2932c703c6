"""What merging saves in forward FLOPs: counted on the model (:func:`flop_gain`, as SkipViT's costs count dropping)
and computed from the r schedule alone (:func:`schedule_flops`, the same number without running the model, so a
notebook can set any schedule's FLOP-ideal speed-up beside a measured one).

FLOPs follow torch's counter (``vitstudy.bench.flops``): a multiply-add is 2 FLOPs; matmuls, convolutions and
attention count, elementwise work (norms, softmax, the size-weighted averages, the scatter of a merge) counts 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from ..bench import flops_per_image
from ..config import check
from .merge import Schedule, parse_r, removed_per_layer, token_counts
from .patch import merging


def flop_gain(model: nn.Module, input_size: tuple[int, int, int], flops_off: float | None = None) -> dict[str, float]:
    """Forward FLOPs per image with merging off (r = 0, stock timm) and with the model's r, and the FLOP-ideal
    throughput gain (%). ``flops_off`` skips counting the unmerged model again (the same for every r)."""
    with merging(model, 0):
        off = flops_per_image(model, input_size) if flops_off is None else flops_off
    on = flops_per_image(model, input_size)
    return {"gflops_off": off / 1e9, "gflops_on": on / 1e9, "ideal_gain_pct": 100 * (off / on - 1)}


def _linear_weights(module: nn.Module) -> int:
    """Multiply-adds per token of every Linear layer inside ``module``."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def schedule_flops(model: nn.Module, r: Schedule = 0) -> float:
    """Forward FLOPs per image of a timm ViT at its own input size when its blocks merge tokens by schedule ``r``
    (ToMe's: see :func:`~vitstudy.tome.merge.parse_r`); r = 0 is the unpatched model. The model need not be patched.

    Block i sees n_i tokens in its attention and n_{i+1} in its MLP: 2·n·(its Linear weights) for the projections,
    4·n²·(heads × head size) for attention, and 2·⌈n/2⌉·⌊n/2⌋·(head size) for the matching's similarity matrix.
    """
    if getattr(model, "attn_pool", None) is not None:
        raise ValueError(
            f"{type(model).__name__} pools with attention (global_pool={model.global_pool!r}): schedule_flops counts "
            "ViTs with a linear head on [CLS] or averaged tokens"
        )
    P = model.num_prefix_tokens
    patches = model.patch_embed.num_patches
    schedule = parse_r(len(model.blocks), r)
    counts = token_counts(patches + P, schedule, P)
    removed = removed_per_layer(patches + P, schedule, P)
    total = token_flops(model, counts[:-1], counts[1:])
    for block, before, merged in zip(model.blocks, counts, removed):
        if merged:
            total += 2 * math.ceil(before / 2) * (before // 2) * block.attn.head_dim
    return float(total)


def token_flops(model: nn.Module, attention_tokens: Sequence[int], mlp_tokens: Sequence[int]) -> float:
    """Forward FLOPs per image of a timm ViT whose block i sees ``attention_tokens[i]`` tokens in its attention and
    ``mlp_tokens[i]`` in its MLP (any rule that removes tokens: merging, dropping, fusing); the patch embedding and
    the head as in the full model. :func:`schedule_flops` is this plus the matching's similarity matrices."""
    check(
        len(attention_tokens) == len(mlp_tokens) == len(model.blocks),
        "attention_tokens",
        (list(attention_tokens), list(mlp_tokens)),
        f"two lists of {len(model.blocks)} token counts, one per block",
    )
    patches = model.patch_embed.num_patches
    total = 2 * patches * model.patch_embed.proj.weight.numel() + 2 * _linear_weights(model.head)
    for block, before, after in zip(model.blocks, attention_tokens, mlp_tokens):
        attn = block.attn
        total += 2 * before * _linear_weights(attn) + 4 * before**2 * attn.num_heads * attn.head_dim
        total += 2 * after * _linear_weights(block.mlp)
    return float(total)
