"""SkipViT (Ataiefard et al., AAAI 2024): drop patch tokens ranked by [CLS] attention, re-insert them later.

Modules, lowest first (each imports only those above it):

- ``settings``: :class:`SkipViTSettings` and the paper's rows as presets (``TABLE1``, ``TABLE3``, ``preset()``).
- ``tokens``: the token maths as pure tensor functions ([CLS] scores, top-k keep, gather, re-insert, fuse).
- ``patch``: the forward over the blocks and the class swap onto a timm ViT (``apply_skipvit``, ``dropping``,
  warm-up, ``trace_forward``, ``flop_gain``).
- ``study``: the per-scale :class:`SkipViTBudget`, training runs (accuracy, warm-up) and timing runs.
- ``tables`` (``table_1``, ``table_3``, skip 10 vs 11), ``plots``, ``explorer`` (``explore() -> ExplorerView``).

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
- ``mode="fused"``: EViT's baseline, the dropped tokens are replaced by one token, their attention-weighted
  average, appended after the patches; nothing is re-inserted. ``mode="drop"``: plain dropping, no skip, no fusion.
- "Dropping on / off" (``top1_dropping_on``, ``set_dropping``) is whether tokens are dropped at test time; it is
  not an accuracy drop.
"""

from .explorer import (
    DropTrace,
    ExplorerInputs,
    class_names,
    explore,
    explore_controls,
    explorer_figure,
    explorer_inputs,
    explorer_settings,
    explorer_widget,
    load_image,
    trace_image,
)
from .patch import (
    SkipViTMixin,
    Stage,
    apply_skipvit,
    configure,
    dropping,
    flop_gain,
    remove_skipvit,
    set_dropping,
    skipvit_blocks,
    trace_forward,
    warmup_epochs_for,
    warmup_hook,
)
from .plots import accuracy_plot, gain_plot, warmup_plot
from .settings import BASELINE, EXTRA, MODES, PRESETS, RATIO_OF, TABLE1, TABLE3, SkipViTSettings, preset
from .study import (
    SkipViTBudget,
    accuracy_runs,
    accuracy_summary,
    run_dir,
    table1_budget,
    table3_budget,
    train_row,
    warmup_runs,
)
from .tables import skip_layer_comparison, table_1, table_3
from .timing import (
    CONTROL,
    explain_verdicts,
    profile_explains,
    profile_rows,
    rows_to_profile,
    timing_runs,
    training_step_arm,
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
    "MODES",
    "PRESETS",
    "RATIO_OF",
    "TABLE1",
    "TABLE3",
    "DropTrace",
    "ExplorerInputs",
    "SkipViTBudget",
    "SkipViTMixin",
    "SkipViTSettings",
    "Stage",
    "accuracy_plot",
    "accuracy_runs",
    "accuracy_summary",
    "apply_skipvit",
    "class_names",
    "cls_attention_from_qkv",
    "cls_attention_scores",
    "configure",
    "drop_count",
    "dropping",
    "explore",
    "explore_controls",
    "explorer_figure",
    "explorer_inputs",
    "explorer_settings",
    "explorer_widget",
    "flop_gain",
    "fuse_tokens",
    "gain_plot",
    "gather_tokens",
    "load_image",
    "preset",
    "reinsert_tokens",
    "remove_skipvit",
    "run_dir",
    "set_dropping",
    "skip_layer_comparison",
    "skipvit_blocks",
    "table1_budget",
    "table3_budget",
    "table_1",
    "table_3",
    "timing_runs",
    "CONTROL",
    "explain_verdicts",
    "profile_explains",
    "profile_rows",
    "rows_to_profile",
    "topk_keep_indices",
    "trace_forward",
    "trace_image",
    "train_row",
    "training_step_arm",
    "warmup_epochs_for",
    "warmup_hook",
    "warmup_plot",
    "warmup_runs",
]
