"""SkipViT (Ataiefard et al., AAAI 2024): drop patch tokens ranked by [CLS] attention, re-insert them later.

The method core, lowest first (each module imports only those above it, and none imports ``vitstudy.experiments``:
the notebooks' experiments build on this package, never the other way round):

- ``settings``: :class:`SkipViTSettings` and the paper's rows as presets (``TABLE1``, ``TABLE3``, ``HEADLINE``,
  ``preset()``).
- ``tokens``: the token maths as pure tensor functions ([CLS] scores, top-k keep, gather, re-insert, fuse).
- ``patch``: the forward over the blocks and the class swap onto a timm ViT (``apply_skipvit``, ``dropping``,
  warm-up, ``trace_forward``).
- ``costs``: what dropping saves: forward FLOPs (``flop_gain``, the FLOP-ideal speed-up) and the activation memory
  a training step keeps for backward (``saved_activation_bytes``).
- ``explorer``: which patches a setting drops, for one image (``explore() -> ExplorerView``, the widget).

The experiments of notebooks 04-09 (Table 1, warm-up, the explorer's inputs, from scratch, memory and model size)
live in ``vitstudy.experiments.skipvit``, one module per notebook (``layers_ratios``, ``warmup``,
``patch_drop_explorer``, ``from_scratch``, ``memory_and_size``) and ``common`` for what they share.

Conventions (the paper's, made exact):

- Layers are 1-indexed: drop layer ``L = 6`` means "after the 6th block". The tokens are ranked by the [CLS]
  query of block L's own attention against all keys, averaged over heads (captured by a forward hook on
  ``blocks[L-1].attn.qkv``: one query row, O(N) per image, so timm's fused attention stays on its fast path).
- ``mode="skip"``: the dropped tokens skip blocks ``L+1 … S-1`` and are put back at their original positions as
  part of the *input* of block ``S`` (the skip layer), which therefore sees all tokens again. With S = 11 after
  L = 6 they skip blocks 7, 8, 9, 10. This reading matches the paper's speed-ups (its +13.2 % for 6/55 %/11 is
  ~60 % of the FLOP-ideal gain of skipping 4 blocks; skipping 5 would make the ideal ~30 %).
- Two-stage dropping ranks only the survivors of the first stage. ``ratio_of="surviving"`` (default, EViT's
  convention): the second ratio is a fraction of the tokens that reach it (4,7 at 30 %,30 % keeps 0.7 × 0.7 = 49 %
  of the patches); ``ratio_of="original"``: a fraction of the original patch count (keeps 1 - 0.3 - 0.3 = 40 %).
- A stage with ratio r drops ``floor(r · n)`` of its n patch tokens; [CLS] and every other prefix token
  (``num_prefix_tokens``: registers, distillation token) are always kept, in their original order, and the kept
  patches keep their relative order too.
- ``mode="fused"``: EViT's baseline computed as EViT's code computes it (youweiliang/evit, evit.py
  ``Attention.forward`` / ``Block.forward``; a test compares a transcription on the same tensors): the tokens are
  ranked and dropped inside block L after its attention, so the dropped ones skip block L's MLP, and replaced by
  one token, Σ token · its raw [CLS] attention (weights not renormalised), appended after the patches; nothing is
  re-inserted. ``placement="block"`` / ``fuse_weights="normalised"`` give the after-the-block, renormalised variant.
  ``mode="drop"``: plain dropping, no skip, no fusion.
- ``placement``: SkipViT's own rows drop after the whole block L (``"block"``, the default for skip and drop:
  the paper's "SkipViT attention block" does not say which); ``"attention"`` drops after block L's attention.
- "Dropping on / off" (``top1_dropping_on``, ``set_dropping``) is whether tokens are dropped at test time; it is
  not an accuracy drop.
"""

from .costs import flop_gain, saved_activation_bytes
from .explorer import (
    DropTrace,
    class_names,
    explore,
    explore_controls,
    explorer_figure,
    explorer_settings,
    explorer_widget,
    load_image,
    readout,
    trace_image,
)
from .patch import (
    SkipViTMixin,
    Stage,
    TokenState,
    apply_skipvit,
    attention_half,
    checkpointing,
    configure,
    dropping,
    mlp_half,
    remove_skipvit,
    run_skipvit_blocks,
    set_dropping,
    skipvit_blocks,
    skipvit_step,
    trace_forward,
    warmup_epochs_for,
    warmup_hook,
)
from .settings import (
    BASELINE,
    EXTRA,
    FUSE_WEIGHTS,
    HEADLINE,
    MODES,
    PLACEMENTS,
    PRESETS,
    RATIO_OF,
    TABLE1,
    TABLE3,
    SkipViTSettings,
    preset,
)
from .tokens import (
    cls_attention_from_qkv,
    cls_attention_scores,
    drop_count,
    fuse_tokens,
    gather_tokens,
    reinsert_tokens,
    topk_keep_indices,
)

__all__ = [
    "BASELINE",
    "EXTRA",
    "HEADLINE",
    "FUSE_WEIGHTS",
    "MODES",
    "PLACEMENTS",
    "PRESETS",
    "RATIO_OF",
    "TABLE1",
    "TABLE3",
    "DropTrace",
    "SkipViTMixin",
    "SkipViTSettings",
    "Stage",
    "TokenState",
    "apply_skipvit",
    "attention_half",
    "checkpointing",
    "class_names",
    "cls_attention_from_qkv",
    "cls_attention_scores",
    "configure",
    "drop_count",
    "dropping",
    "mlp_half",
    "explore",
    "explore_controls",
    "explorer_figure",
    "explorer_settings",
    "explorer_widget",
    "flop_gain",
    "fuse_tokens",
    "gather_tokens",
    "load_image",
    "preset",
    "readout",
    "reinsert_tokens",
    "remove_skipvit",
    "run_skipvit_blocks",
    "saved_activation_bytes",
    "set_dropping",
    "skipvit_blocks",
    "skipvit_step",
    "topk_keep_indices",
    "trace_forward",
    "trace_image",
    "warmup_epochs_for",
    "warmup_hook",
]
