"""ToMe (Token Merging, Bolya et al., ICLR 2023): merge similar tokens inside every block, keep them all.

The method core, lowest first (each module imports only those above it, and none imports ``vitstudy.experiments``):

- ``merge``: the token maths as pure tensor functions (bipartite soft matching, size-weighted merging, source
  tracking, ``merge_groups``) and the r schedule (``parse_r``, ``token_counts``).
- ``patch``: the forward over the blocks and the class swap onto a timm ViT (``apply_tome``, ``merging``,
  ``trace_forward``, ``trace_blocks``: the sources after every block).
- ``costs``: what merging saves in forward FLOPs, counted (``flop_gain``) or from the schedule (``schedule_flops``).

Conventions (ToMe's, facebookresearch/ToMe tome/patch/timm.py):

- Block i merges ``r_i`` tokens between its attention and its MLP, so its MLP and every later block see fewer
  tokens; a block never removes more than half of its mergeable tokens. The matching compares the keys of block
  i's own attention, averaged over heads (cosine similarity).
- A merged token is the size-weighted average of the tokens it joins; ``size`` counts the patches behind each
  token, and proportional attention (``prop_attn``, on by default) adds log(size) to every key's logit.
- Prefix tokens ([CLS], registers, distillation) are never merged nor merged into, and stay first.
- ``r`` is ToMe's: an int (every block), ``(r, inflection)`` or a per-block list; r = 0 is timm's own forward,
  bit for bit. Unlike SkipViT nothing is dropped or put back: every patch lives on inside some merged token.
"""

from .costs import flop_gain, schedule_flops
from .merge import (
    Matching,
    bipartite_soft_matching,
    merge_groups,
    merge_source,
    merge_wavg,
    parse_r,
    removed_per_layer,
    token_counts,
)
from .patch import (
    MergeState,
    ToMeMixin,
    apply_tome,
    attention_half,
    keys_metric,
    merging,
    proportional_bias,
    remove_tome,
    tome_blocks,
    tome_step,
    trace_blocks,
    trace_forward,
)

__all__ = [
    "Matching",
    "MergeState",
    "ToMeMixin",
    "apply_tome",
    "attention_half",
    "bipartite_soft_matching",
    "flop_gain",
    "keys_metric",
    "merge_groups",
    "merge_source",
    "merge_wavg",
    "merging",
    "parse_r",
    "proportional_bias",
    "remove_tome",
    "removed_per_layer",
    "schedule_flops",
    "token_counts",
    "tome_blocks",
    "tome_step",
    "trace_blocks",
    "trace_forward",
]
