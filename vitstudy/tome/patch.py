"""ToMe on a timm VisionTransformer: the merging forward over the blocks and the class swap that installs it.

:func:`apply_tome` swaps the model's class for a subclass whose ``forward_features`` loops over ``self.blocks``
itself, as SkipViT's patch does: each block runs timm's own modules, split into its attention and MLP halves, and
the tokens are merged between the two (ToMe's place). Nothing of timm's Block or Attention is copied: proportional
attention is the additive ``attn_mask`` timm's Attention already takes (log of each key's size), and the matching
metric (the keys averaged over heads) is read from the block's qkv projection by a forward hook. The state dict is
untouched, so checkpoints load into plain timm models and back; ``model.r`` can be changed at any time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models import check_is_vit, forward_start
from ..skipvit.patch import OutputCapture, SkipViTMixin, checkpointing, mlp_half, run_piece
from .merge import Schedule, bipartite_soft_matching, merge_source, merge_wavg, parse_r

CAPTURE_ATTR = "_tome_capture"  # where apply_tome() keeps each block's OutputCapture on its attn.qkv


@dataclass
class MergeState:
    """The sequence a ToMe forward carries from one block to the next.

    ``size`` counts the patches behind each token (None until the first merge: all 1); ``source`` marks which of
    the N₀ first-block tokens each token stands for (only when the source is traced).
    """

    x: torch.Tensor  # [B, N, C]
    size: torch.Tensor | None = None  # [B, N, 1]
    source: torch.Tensor | None = None  # [B, N, N₀]
    counts: list[int] = field(default_factory=list)  # tokens entering each block run so far


def proportional_bias(size: torch.Tensor | None) -> torch.Tensor | None:
    """ToMe's proportional attention as an additive attention mask: log(size) of each key, size [B, N, 1] ->
    [B, 1, 1, N], so a token standing for s patches weighs as s copies of one (None: no merge yet, no mask)."""
    return None if size is None else size.log()[:, None, None, :, 0]


def attention_half(block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The first residual step of a timm ``Block`` with an attention mask: x + attention(norm1(x), attn_mask).

    SkipViT's ``attention_half`` is the same step without a mask; ToMe needs the mask for proportional attention.
    """
    return x + block.drop_path1(block.ls1(block.attn(block.norm1(x), attn_mask=attn_mask)))


def keys_metric(qkv: torch.Tensor, attn: nn.Module) -> torch.Tensor:
    """ToMe's matching metric, the keys averaged over heads: a timm ``Attention``'s qkv output [B, N, 3·H·D] ->
    [B, N, D] (its key norm applied, as the attention uses the keys)."""
    B, N, _ = qkv.shape
    H = attn.num_heads
    k = qkv.reshape(B, N, 3, H, qkv.shape[-1] // (3 * H))[:, :, 1].transpose(1, 2)  # [B, H, N, D]
    return attn.k_norm(k).mean(dim=1)


@contextlib.contextmanager
def _capture_qkv(attn: nn.Module) -> Iterator[OutputCapture]:
    """The qkv output of ``attn`` during the block, through the capture :func:`apply_tome` placed on it (one per
    block for the model's life: torch.compile traces the hooks a module has when it compiles)."""
    capture = getattr(attn.qkv, CAPTURE_ATTR, None)
    if capture is None:
        raise TypeError(
            "this block has no ToMe capture on its attn.qkv: run the blocks of a model patched by apply_tome"
        )
    capture.open = True
    try:
        yield capture
    finally:
        capture.open = False


def tome_step(
    block: nn.Module,
    state: MergeState,
    r: int,
    num_prefix_tokens: int = 1,
    prop_attn: bool = True,
    trace_source: bool = False,
    checkpointed: bool = False,
) -> MergeState:
    """One block on ``state``, merging up to ``r`` tokens between its attention and its MLP (ToMe's ToMeBlock).

    Before the first merge the block is timm's own call; ``prop_attn`` weighs each key by its size afterwards.
    ``checkpointed``: each half runs under activation checkpointing (timm's ``set_grad_checkpointing``).
    """
    x, size, source = state.x, state.size, state.source
    counts = [*state.counts, x.shape[1]]
    bias = proportional_bias(size) if prop_attn else None
    if r <= 0:
        return MergeState(run_piece(block, x, bias, checkpointed=checkpointed), size, source, counts)
    with _capture_qkv(block.attn) as capture:
        x = run_piece(attention_half, block, x, bias, checkpointed=checkpointed)
    matching = bipartite_soft_matching(keys_metric(capture.take(), block.attn), r, num_prefix_tokens)
    if matching is not None:
        if trace_source:
            source = merge_source(matching.merge, x, source)
        x, size = merge_wavg(matching.merge, x, size)
    return MergeState(run_piece(mlp_half, block, x, checkpointed=checkpointed), size, source, counts)


def tome_blocks(
    blocks: Sequence[nn.Module],
    x: torch.Tensor,
    schedule: Sequence[int],
    num_prefix_tokens: int = 1,
    prop_attn: bool = True,
    trace_source: bool = False,
    checkpointed: bool = False,
) -> MergeState:
    """Run ``blocks`` (of a model patched by :func:`apply_tome`) over x [B, N₀, C], block i merging ``schedule[i]``
    tokens; returns the state after the last."""
    state = MergeState(x)
    for block, r in zip(blocks, schedule, strict=True):
        state = tome_step(block, state, r, num_prefix_tokens, prop_attn, trace_source, checkpointed)
    return state


# ----------------------------------------------------------------------------------------------------------
# Patching a timm VisionTransformer


class ToMeMixin:
    """Mixed in before a timm VisionTransformer class by :func:`apply_tome`.

    ``r`` (ToMe's: an int, ``(r, inflection)`` or a per-block list, see :func:`~vitstudy.tome.merge.parse_r`) is
    checked against the depth when set; ``prop_attn`` switches proportional attention. ``forward_features`` (and so
    ``forward``) merges in training and in eval whenever the schedule removes tokens, each half-block under
    activation checkpointing when ``set_grad_checkpointing()`` is on; with r = 0 it is timm's own forward.
    """

    prop_attn: bool

    @property
    def r(self) -> Schedule:
        return self._tome_r

    @r.setter
    def r(self, value: Schedule) -> None:
        parse_r(len(self.blocks), value)  # refuses a bad value in one line, before anything changes
        self._tome_r = list(value) if isinstance(value, list) else value

    @property
    def tome_schedule(self) -> list[int]:
        """Tokens each block merges away (before the cap at half the mergeable tokens)."""
        return parse_r(len(self.blocks), self._tome_r)

    @property
    def merging(self) -> bool:
        """Whether the forward differs from stock timm's (some block has r > 0)."""
        return any(self.tome_schedule)

    def forward_features(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        if not self.merging:
            return super().forward_features(x, attn_mask=attn_mask, is_causal=is_causal)
        _refuse(attn_mask is not None or is_causal, "attn_mask / is_causal")
        state = tome_blocks(
            self.blocks,
            forward_start(self, x),
            self.tome_schedule,
            self.num_prefix_tokens,
            self.prop_attn,
            checkpointed=checkpointing(self),
        )
        return self.norm(state.x)

    def forward_intermediates(self, x: torch.Tensor, *args, **kwargs):
        """timm's ``forward_intermediates`` while nothing is merged; refused in one line while merging (the blocks'
        merged sequences have no image grid and no fixed length)."""
        _refuse(self.merging, f"forward_intermediates (r={self._tome_r!r})")
        return super().forward_intermediates(x, *args, **kwargs)


def _refuse(refused: bool, what: str) -> None:
    if refused:
        raise ValueError(f"ToMe token merging does not support {what}: set model.r = 0 (no merging) first")


_CLASSES: dict[type, type] = {}


def _tome_class(base: type) -> type:
    if issubclass(base, ToMeMixin):
        return base
    if base not in _CLASSES:
        _CLASSES[base] = type(f"ToMe{base.__name__}", (ToMeMixin, base), {})
    return _CLASSES[base]


def apply_tome(model: nn.Module, r: Schedule = 0, prop_attn: bool = True) -> nn.Module:
    """Give a timm VisionTransformer ToMe token merging, in place (weights untouched); returns the model.

    ``r``: tokens merged per block (see :func:`~vitstudy.tome.merge.parse_r`); change it later with ``model.r = …``
    or :func:`merging`. ``prop_attn``: proportional attention, ToMe's default for off-the-shelf models. The prefix
    tokens ([CLS], registers, distillation) are never merged.
    """
    check_is_vit(model)
    if isinstance(model, SkipViTMixin):
        raise TypeError(
            f"{type(model).__name__} already drops tokens with SkipViT: ToMe does not compose with it, call "
            "skipvit.remove_skipvit(model) first"
        )
    for number, block in enumerate(model.blocks, start=1):
        attn = getattr(block, "attn", None)
        if not (isinstance(getattr(attn, "qkv", None), nn.Linear) and hasattr(attn, "num_heads")):
            raise TypeError(
                f"block {number} of {type(model).__name__} has attention {type(attn).__name__} without a fused "
                "qkv Linear and num_heads (timm's Attention): ToMe matches tokens by the keys of that projection"
            )
    parse_r(len(model.blocks), r)
    if not isinstance(model, ToMeMixin):
        model._tome_hooks = []
        for block in model.blocks:
            capture = OutputCapture()
            setattr(block.attn.qkv, CAPTURE_ATTR, capture)
            model._tome_hooks.append(block.attn.qkv.register_forward_hook(capture))
    model.__class__ = _tome_class(type(model))
    model.r = r
    model.prop_attn = prop_attn
    return model


def remove_tome(model: nn.Module) -> nn.Module:
    """Undo :func:`apply_tome`: the model is its stock timm class again."""
    if isinstance(model, ToMeMixin):
        for handle in model._tome_hooks:
            handle.remove()
        for block in model.blocks:
            delattr(block.attn.qkv, CAPTURE_ATTR)
        model.__class__ = next(c for c in type(model).__mro__[1:] if not issubclass(c, ToMeMixin))
        del model._tome_r, model.prop_attn, model._tome_hooks
    return model


@contextlib.contextmanager
def merging(model: nn.Module, r: Schedule) -> Iterator[nn.Module]:
    """``with merging(model, 0): ...`` runs with another r (0: stock timm), then restores the previous one."""
    if not isinstance(model, ToMeMixin):
        raise TypeError(f"{type(model).__name__} has no ToMe patch: call apply_tome(model, r) first")
    before = model.r
    model.r = r
    try:
        yield model
    finally:
        model.r = before


def trace_forward(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, MergeState]:
    """Logits [B, classes] of a patched model and the state after its last block: the tokens entering each block
    (``counts``), each final token's size and source (no grad, eval as it is)."""
    logits, states = trace_blocks(model, images)
    return logits, states[-1]


def trace_blocks(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[MergeState]]:
    """Logits [B, classes] of a patched model and the state after each of its blocks, sources traced (ToMe's
    ``trace_source``): which patches every token stands for after block 1, 2, …, as an explorer draws them. The
    source stays None until a block merges (each token still one patch). No grad, eval as it is."""
    with torch.no_grad():
        state = MergeState(forward_start(model, images))
        states = []
        for block, r in zip(model.blocks, model.tome_schedule, strict=True):
            state = tome_step(block, state, r, model.num_prefix_tokens, model.prop_attn, trace_source=True)
            states.append(state)
        return model.forward_head(model.norm(state.x)), states
