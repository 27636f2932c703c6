"""SkipViT on a timm VisionTransformer: the forward over the blocks and the class swap that installs it.

:func:`apply_skipvit` swaps the model's class for a subclass whose ``forward_features`` loops over
``self.blocks`` itself (ToMe's pattern; nothing of timm's Block or Attention is copied) and keeps every knob
in one frozen :class:`~vitstudy.skipvit.settings.SkipViTSettings` on ``model.skipvit``. The state dict is
untouched, so checkpoints load into plain timm models and back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint
from torch import nn

from ..config import check
from ..models import check_is_vit, forward_start
from .settings import BASELINE, SkipViTSettings, preset
from .tokens import cls_attention_from_qkv, drop_count, fuse_tokens, gather_tokens, reinsert_tokens, topk_keep_indices


@dataclass
class Stage:
    """What one drop stage did, in original patch numbering (0 = first patch after the prefix tokens)."""

    layer: int
    scores: torch.Tensor  # [B, n_patches_at_stage] CLS attention of the patches present at this stage
    present: torch.Tensor  # [B, n_patches_at_stage] their original patch indices
    kept: torch.Tensor  # [B, n_kept] original patch indices kept
    dropped: torch.Tensor  # [B, n_dropped] original patch indices dropped


class OutputCapture:
    """A forward hook that keeps its module's output while it is open (a drop layer's qkv, [B, N, 3·H·D]).

    :func:`configure` leaves one on each drop layer's ``attn.qkv`` rather than registering one per forward:
    torch.compile traces the hooks a module has when it compiles, not one registered inside the compiled forward.
    """

    def __init__(self) -> None:
        self.open = False
        self.out: torch.Tensor | None = None

    def __call__(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        if self.open:
            self.out = output

    def take(self) -> torch.Tensor:
        """The captured output, released (the capture holds no activation between forwards)."""
        out, self.out = self.out, None
        return out


CAPTURE_ATTR = "_skipvit_capture"  # where configure() keeps a drop layer's OutputCapture on its attn.qkv


@contextlib.contextmanager
def _capture_output(module: nn.Module) -> Iterator[OutputCapture]:
    capture = getattr(module, CAPTURE_ATTR, None)
    handle = None
    if capture is None:  # blocks that configure() did not prepare (skipvit_blocks called directly): eager only
        capture = OutputCapture()
        handle = module.register_forward_hook(capture)
    capture.open = True
    try:
        yield capture
    finally:
        capture.open = False
        if handle is not None:
            handle.remove()


def attention_half(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The first residual step of a timm ``Block``: x + attention(norm1(x)), x [B, N, C] → [B, N, C]."""
    return x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))


def mlp_half(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The second residual step of a timm ``Block``: x + mlp(norm2(x)). ``mlp_half(b, attention_half(b, x))`` is
    ``b(x)`` (timm's ``Block.forward`` is exactly these two steps; a test checks it): splitting the block is how
    a drop placed after the attention (EViT's placement) lets the dropped tokens skip the block's MLP."""
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


@dataclass
class TokenState:
    """The sequence a SkipViT forward carries from one block to the next, so a caller can stop between any two
    blocks, look at ``x``, drop batch rows (:meth:`select`) and go on (the multi-exit model does all three).

    ``index`` holds the original position of each prefix and patch token of ``x``; the fused tokens of mode "fused"
    sit after them in ``x`` and have none. ``held`` are the dropped tokens waiting for the skip layer.
    """

    x: torch.Tensor  # [B, N', C] the next block's input
    index: torch.Tensor  # [B, N'' <= N'] original positions of x's prefix and patch tokens
    held: list[tuple[torch.Tensor, torch.Tensor]]  # per drop stage: (tokens [B, M, C], positions [B, M])
    length: int  # N, the full sequence length (what the skip layer restores)

    @classmethod
    def start(cls, x: torch.Tensor) -> TokenState:
        """The state before the first block: every token present, x [B, N, C]."""
        B, N, _ = x.shape
        return cls(x, torch.arange(N, device=x.device).expand(B, N), [], N)

    def select(self, rows: torch.Tensor) -> TokenState:
        """Batch rows ``rows`` [b] of every tensor, held tokens included: [B, …] → [b, …]."""
        held = [(t.index_select(0, rows), i.index_select(0, rows)) for t, i in self.held]
        return TokenState(self.x.index_select(0, rows), self.index.index_select(0, rows), held, self.length)


def run_piece(fn: Callable[..., torch.Tensor], *args: object, checkpointed: bool = False) -> torch.Tensor:
    """``fn(*args)``, or under timm's activation checkpointing (recomputed in backward) when ``checkpointed``."""
    return checkpoint(fn, *args) if checkpointed else fn(*args)


def skipvit_step(
    block: nn.Module,
    layer: int,
    state: TokenState,
    settings: SkipViTSettings,
    num_prefix_tokens: int = 1,
    trace: list[Stage] | None = None,
    checkpointed: bool = False,
) -> TokenState:
    """Block number ``layer`` (1-indexed in ``settings``' numbering) on ``state``, with SkipViT's re-insertion before
    it (skip layer) and its drop stage in or after it (drop layer); returns the next block's state.

    ``checkpointed``: every call into the block's modules runs under activation checkpointing (timm's
    ``set_grad_checkpointing``); the drop decision is taken outside, on the forward's own scores.
    """
    P = num_prefix_tokens
    x, index, held = state.x, state.index, state.held
    if layer == settings.skip_layer and held:
        # Token-level skip connection: every held token rejoins at its original index as block S's input.
        x = reinsert_tokens(torch.cat([x, *(t for t, _ in held)], 1), torch.cat([index, *(i for _, i in held)], 1))
        B = x.shape[0]
        index, held = torch.arange(state.length, device=x.device).expand(B, state.length), []
    stages = dict(zip(settings.drop_layers, settings.drop_ratios))
    if layer not in stages:
        return TokenState(run_piece(block, x, checkpointed=checkpointed), index, held, state.length)
    with _capture_output(block.attn.qkv) as capture:
        piece = (block,) if settings.placement == "block" else (attention_half, block)
        x = run_piece(*piece, x, checkpointed=checkpointed)
    n_patches = index.shape[1] - P
    with torch.set_grad_enabled(torch.is_grad_enabled() and settings.mode == "fused"):
        scores = cls_attention_from_qkv(capture.take(), block.attn)[:, P : P + n_patches]  # [B, n]
    reference = state.length - P if settings.ratio_of == "original" else n_patches
    n_drop = min(drop_count(stages[layer], reference), n_patches - 1)
    keep, drop = topk_keep_indices(scores.detach(), n_patches - n_drop)  # positions within the patches
    patches, positions = x[:, P : P + n_patches], index[:, P:]
    if trace is not None:
        trace.append(
            Stage(
                layer,
                scores.detach(),
                positions - P,
                gather_tokens(positions, keep) - P,
                gather_tokens(positions, drop) - P,
            )
        )
    if settings.mode == "skip" and n_drop:
        held = [*held, (gather_tokens(patches, drop), gather_tokens(positions, drop))]
    # Mode "fused": one token per stage after the patches; earlier stages' fused tokens ride along as the blocks
    # updated them (not ranked again: EViT ranks them with the patches, a difference only with two stages).
    fused = x[:, P + n_patches :]  # [B, stages so far, C]
    if settings.mode == "fused" and n_drop:
        weights = gather_tokens(scores, drop)
        new = fuse_tokens(gather_tokens(patches, drop), weights, settings.fuse_weights == "normalised")
        fused = torch.cat([fused, new], 1)
    x = torch.cat([x[:, :P], gather_tokens(patches, keep), fused], 1)
    index = torch.cat([index[:, :P], gather_tokens(positions, keep)], 1)
    if settings.placement == "attention":
        # The kept tokens (and fused tokens) finish block L; the dropped ones skip its MLP.
        x = run_piece(mlp_half, block, x, checkpointed=checkpointed)
    return TokenState(x, index, held, state.length)


def run_skipvit_blocks(
    blocks: Sequence[nn.Module],
    state: TokenState,
    start: int,
    stop: int,
    settings: SkipViTSettings,
    num_prefix_tokens: int = 1,
    trace: list[Stage] | None = None,
    checkpointed: bool = False,
) -> TokenState:
    """Blocks ``start+1 … stop`` (1-indexed, i.e. ``blocks[start:stop]``) on ``state``; returns the state after."""
    for layer in range(start + 1, stop + 1):
        state = skipvit_step(blocks[layer - 1], layer, state, settings, num_prefix_tokens, trace, checkpointed)
    return state


def skipvit_blocks(
    blocks: Sequence[nn.Module],
    x: torch.Tensor,
    settings: SkipViTSettings,
    num_prefix_tokens: int = 1,
    trace: list[Stage] | None = None,
    checkpointed: bool = False,
) -> torch.Tensor:
    """Run ``blocks`` over x [B, N, C] with token dropping; returns [B, N', C] (N' = N in skip mode).

    ``trace``, when given, receives one :class:`Stage` per drop layer (for the explorer and the tests);
    ``checkpointed`` runs each block under activation checkpointing.
    """
    state = TokenState.start(x)
    return run_skipvit_blocks(blocks, state, 0, len(blocks), settings, num_prefix_tokens, trace, checkpointed).x


def checkpointing(model: nn.Module) -> bool:
    """Whether a timm ViT's blocks should run under activation checkpointing now: timm's switch
    (``set_grad_checkpointing``) is on and autograd records (checkpointing without a backward only costs time)."""
    return (
        bool(getattr(model, "grad_checkpointing", False)) and torch.is_grad_enabled() and not torch.jit.is_scripting()
    )


# ----------------------------------------------------------------------------------------------------------
# Patching a timm VisionTransformer


class SkipViTMixin:
    """Mixed in before a timm VisionTransformer class by :func:`apply_skipvit`; reads ``self.skipvit``.

    timm's seams that run the blocks follow the dropping: ``forward_features`` (and so ``forward``) and
    ``forward_intermediates`` drop tokens whenever dropping is on, in training and in eval, each block under
    activation checkpointing when ``set_grad_checkpointing()`` is on.
    """

    skipvit: SkipViTSettings

    def forward_features(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        if not self.skipvit.active:
            return super().forward_features(x, attn_mask=attn_mask, is_causal=is_causal)
        _refuse_mask(attn_mask, is_causal)
        x = skipvit_blocks(
            self.blocks, forward_start(self, x), self.skipvit, self.num_prefix_tokens, checkpointed=checkpointing(self)
        )
        return self.norm(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        output_dict: bool = False,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ):
        """timm's ``forward_intermediates`` with the tokens dropped as ``forward_features`` drops them.

        With dropping on, a block's intermediate is the sequence that block outputs: after a drop layer only the
        kept patches (in their original order; mode "fused": then the fused tokens), from the skip layer on all of
        them again. Such a sequence has no image grid, so only ``output_fmt="NLC"`` is accepted then (one
        [B, N_k, C] per block, prefix tokens split off as timm does); ``"NCHW"`` is refused in one line.
        """
        if not self.skipvit.active:
            return super().forward_intermediates(
                x,
                indices,
                return_prefix_tokens=return_prefix_tokens,
                norm=norm,
                stop_early=stop_early,
                output_fmt=output_fmt,
                intermediates_only=intermediates_only,
                output_dict=output_dict,
                attn_mask=attn_mask,
                is_causal=is_causal,
            )
        _refuse_mask(attn_mask, is_causal)
        if output_fmt != "NLC":
            raise ValueError(
                f"forward_intermediates(output_fmt={output_fmt!r}) needs every patch token of every block, but SkipViT "
                f"dropping is on ({self.skipvit.label}): use output_fmt='NLC' or set_dropping(model, False)"
            )
        take, max_index = feature_take_indices(len(self.blocks), indices)
        stop = max_index + 1 if stop_early else len(self.blocks)
        state, kept = TokenState.start(forward_start(self, x)), []
        for layer in range(1, stop + 1):
            state = skipvit_step(
                self.blocks[layer - 1], layer, state, self.skipvit, self.num_prefix_tokens, None, checkpointing(self)
            )
            if layer - 1 in take:
                kept.append(self.norm(state.x) if norm else state.x)
        P = self.num_prefix_tokens
        intermediates, prefixes = [y[:, P:] for y in kept], [y[:, :P] for y in kept]
        if output_dict:
            result = {"image_intermediates": intermediates}
            if return_prefix_tokens and P:
                result["image_intermediates_prefix"] = prefixes
            if not intermediates_only:
                result["image_features"] = self.norm(state.x)
            return result
        if return_prefix_tokens and P:
            intermediates = list(zip(intermediates, prefixes))
        return intermediates if intermediates_only else (self.norm(state.x), intermediates)


def _refuse_mask(attn_mask: torch.Tensor | None, is_causal: bool) -> None:
    if attn_mask is not None or is_causal:
        raise ValueError("SkipViT token dropping does not support attn_mask / is_causal: switch dropping off")


_CLASSES: dict[type, type] = {}


def _skipvit_class(base: type) -> type:
    if issubclass(base, SkipViTMixin):
        return base
    if base not in _CLASSES:
        _CLASSES[base] = type(f"SkipViT{base.__name__}", (SkipViTMixin, base), {})
    return _CLASSES[base]


def apply_skipvit(model: nn.Module, settings: SkipViTSettings | str = BASELINE) -> nn.Module:
    """Give a timm VisionTransformer SkipViT token dropping, in place (weights untouched); returns the model.

    ``settings`` is a :class:`SkipViTSettings` or a preset name. Change it later with :func:`configure`,
    switch dropping off and on with :func:`set_dropping` / :func:`dropping`.
    """
    check_is_vit(model)
    if getattr(model, "cls_token", None) is None:
        raise ValueError(
            f"{type(model).__name__} has no [CLS] token (class_token=False): SkipViT ranks tokens by [CLS] "
            "attention, so it needs a ViT with a class token"
        )
    for number, block in enumerate(model.blocks, start=1):
        attn = getattr(block, "attn", None)
        if not (isinstance(getattr(attn, "qkv", None), nn.Linear) and hasattr(attn, "num_heads")):
            raise TypeError(
                f"block {number} of {type(model).__name__} has attention {type(attn).__name__} without a fused "
                "qkv Linear and num_heads (timm's Attention): SkipViT scores tokens from that projection"
            )
    model.__class__ = _skipvit_class(type(model))
    if not hasattr(model, "_skipvit_hooks"):
        model._skipvit_hooks = {}  # drop layer -> its capture's hook handle (_place_captures)
    return configure(model, settings)


def configure(model: nn.Module, settings: SkipViTSettings | str) -> nn.Module:
    """Replace the SkipViT settings of a patched model (checked against its depth); returns the model."""
    if not isinstance(model, SkipViTMixin):
        raise TypeError(f"{type(model).__name__} has no SkipViT patch: call apply_skipvit(model, settings) first")
    settings = preset(settings) if isinstance(settings, str) else settings
    settings.check_depth(len(model.blocks))
    model.skipvit = settings
    _place_captures(model, settings.drop_layers)
    return model


def _place_captures(model: nn.Module, layers: Sequence[int]) -> None:
    """One :class:`OutputCapture` on the qkv of each drop layer (1-indexed), none elsewhere."""
    for number, block in enumerate(model.blocks, start=1):
        qkv = block.attn.qkv
        placed = getattr(qkv, CAPTURE_ATTR, None)
        if placed is not None and number not in layers:
            model._skipvit_hooks.pop(number).remove()
            delattr(qkv, CAPTURE_ATTR)
        elif placed is None and number in layers:
            setattr(qkv, CAPTURE_ATTR, OutputCapture())
            model._skipvit_hooks[number] = qkv.register_forward_hook(getattr(qkv, CAPTURE_ATTR))


def remove_skipvit(model: nn.Module) -> nn.Module:
    """Undo :func:`apply_skipvit`: the model is its stock timm class again."""
    if isinstance(model, SkipViTMixin):
        _place_captures(model, ())
        model.__class__ = next(c for c in type(model).__mro__[1:] if not issubclass(c, SkipViTMixin))
        del model.skipvit, model._skipvit_hooks
    return model


def set_dropping(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch token dropping on or off (off = stock timm forward); the other settings stay."""
    return configure(model, dataclasses.replace(model.skipvit, enabled=enabled))


@contextlib.contextmanager
def dropping(model: nn.Module, enabled: bool) -> Iterator[nn.Module]:
    """``with dropping(model, False): ...`` evaluates with dropping off, then restores the previous switch."""
    before = model.skipvit.enabled
    set_dropping(model, enabled)
    try:
        yield model
    finally:
        set_dropping(model, before)


def warmup_epochs_for(epochs: int, fraction: float = 0.15) -> int:
    """Warm-up epochs as a fraction of the run (the paper: 15 of 100), rounded half up."""
    check(0 <= fraction < 1, "warm-up fraction", fraction, "[0, 1)")
    return math.floor(fraction * epochs + 0.5)


def warmup_hook(warmup_epochs: int) -> Callable[[nn.Module, int], None]:
    """``train(..., on_epoch_start=warmup_hook(W))``: no dropping in epochs 0 … W-1, dropping from epoch W on."""
    check(warmup_epochs >= 0, "warmup_epochs", warmup_epochs, "an integer >= 0")

    def hook(model: nn.Module, epoch: int) -> None:
        set_dropping(model, epoch >= warmup_epochs)

    return hook


def trace_forward(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[Stage]]:
    """Logits [B, classes] of a patched model and what each drop stage kept (no grad, eval as it is)."""
    trace: list[Stage] = []
    with torch.no_grad():
        x = forward_start(model, images)
        if model.skipvit.active:
            x = skipvit_blocks(model.blocks, x, model.skipvit, model.num_prefix_tokens, trace)
        else:
            x = model.blocks(x)
        return model.forward_head(model.norm(x)), trace
