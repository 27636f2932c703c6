"""SkipViT (Ataiefard et al., AAAI 2024): drop patch tokens ranked by [CLS] attention, re-insert them later.

Extends any timm ``VisionTransformer`` without copying timm's Block or Attention (ToMe's pattern):
:func:`apply_skipvit` swaps the model's class for a subclass whose ``forward_features`` loops over
``self.blocks`` itself, and keeps every knob in one frozen :class:`SkipViTSettings` on ``model.skipvit``.
The state dict is untouched, so checkpoints load into plain timm models and back.

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
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

MODES = ("skip", "fused", "drop")
RATIO_OF = ("surviving", "original")


# ----------------------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class SkipViTSettings:
    """Where and how many patch tokens to drop, and where they come back. Layers are 1-indexed blocks."""

    drop_layers: tuple[int, ...] = ()
    drop_ratios: tuple[float, ...] = ()
    skip_layer: int | None = None  # mode "skip": the block whose input gets the dropped tokens back
    mode: str = "skip"
    ratio_of: str = "surviving"  # second-stage ratio: of the tokens reaching it (EViT) or of the original count
    enabled: bool = True  # False: the stock timm forward (warm-up, or evaluating with dropping off)

    def __post_init__(self) -> None:
        layers = _as_tuple(self.drop_layers, "drop_layers")
        ratios = _as_tuple(self.drop_ratios, "drop_ratios")
        object.__setattr__(self, "drop_layers", layers)
        object.__setattr__(self, "drop_ratios", ratios)
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not allowed: expected one of {MODES}")
        if self.ratio_of not in RATIO_OF:
            raise ValueError(f"ratio_of={self.ratio_of!r} is not allowed: expected one of {RATIO_OF}")
        if len(layers) != len(ratios):
            raise ValueError(
                f"drop_layers={layers} and drop_ratios={ratios} have different lengths ({len(layers)} != "
                f"{len(ratios)}): give one ratio per drop layer"
            )
        for layer in layers:
            if not isinstance(layer, int) or isinstance(layer, bool) or layer < 1:
                raise ValueError(f"drop layer {layer!r} in drop_layers={layers} is not allowed: expected integers >= 1")
        if any(b <= a for a, b in zip(layers, layers[1:])):
            raise ValueError(f"drop_layers={layers} is not allowed: expected strictly increasing layers")
        for ratio in ratios:
            if not 0 <= ratio < 1:
                raise ValueError(f"drop ratio {ratio!r} in drop_ratios={ratios} is not allowed: expected [0, 1)")
        if self.ratio_of == "original" and sum(ratios) >= 1:
            raise ValueError(
                f"drop_ratios={ratios} sum to {sum(ratios):g} with ratio_of='original': expected a sum < 1 so that "
                "at least one patch token survives"
            )
        if self.mode == "skip":
            if layers and self.skip_layer is None:
                raise ValueError(
                    "skip_layer=None is not allowed with mode='skip': give the block that gets the tokens back"
                )
            if self.skip_layer is not None and (
                not isinstance(self.skip_layer, int) or (layers and self.skip_layer <= layers[-1])
            ):
                raise ValueError(
                    f"skip_layer={self.skip_layer!r} is not allowed: expected an integer after the last drop layer "
                    f"({layers[-1] if layers else 0}), i.e. >= {layers[-1] + 1 if layers else 1}"
                )
        elif self.skip_layer is not None:
            raise ValueError(
                f"skip_layer={self.skip_layer!r} is not allowed with mode={self.mode!r}: only mode='skip' re-inserts "
                "tokens; use skip_layer=None"
            )

    @property
    def active(self) -> bool:
        """Whether the forward differs from stock timm's (enabled and at least one drop layer)."""
        return self.enabled and bool(self.drop_layers)

    @property
    def label(self) -> str:
        """The paper's Table 1 wording: '4,7 / 30%,30% / skip 10', '6 / 45% / fused token', 'baseline'."""
        if not self.drop_layers:
            return "baseline"
        layers = ",".join(str(layer) for layer in self.drop_layers)
        ratios = ",".join(f"{100 * r:g}%" for r in self.drop_ratios)
        tail = {"skip": f"skip {self.skip_layer}", "fused": "fused token", "drop": "no skip"}[self.mode]
        return f"{layers} / {ratios} / {tail}"

    def check_depth(self, depth: int) -> None:
        """Raise a ValueError naming the layer when a drop or skip layer is outside blocks 1 … depth."""
        for layer in self.drop_layers:
            if layer > depth:
                raise ValueError(
                    f"drop layer {layer} in drop_layers={self.drop_layers} is out of range: the model has {depth} "
                    f"blocks, expected 1 … {depth}"
                )
        if self.skip_layer is not None and self.skip_layer > depth:
            raise ValueError(
                f"skip_layer={self.skip_layer} is out of range: the model has {depth} blocks, expected "
                f"{(self.drop_layers[-1] + 1) if self.drop_layers else 1} … {depth}"
            )


def _as_tuple(value: Any, name: str) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise ValueError(f"{name}={value!r} is not allowed: expected a sequence (or a single number)") from None


BASELINE = SkipViTSettings()

# The paper's Table 1, row by row (same order as data/reference/skipvit_table1.csv).
TABLE1: dict[str, SkipViTSettings] = {
    "baseline": BASELINE,
    "fused_6_45": SkipViTSettings((6,), (0.45,), mode="fused"),
    "skip_4_7_30_s10": SkipViTSettings((4, 7), (0.30, 0.30), skip_layer=10),
    "skip_4_7_30_s11": SkipViTSettings((4, 7), (0.30, 0.30), skip_layer=11),
    "skip_6_8_35_s10": SkipViTSettings((6, 8), (0.35, 0.35), skip_layer=10),
    "skip_6_8_35_s11": SkipViTSettings((6, 8), (0.35, 0.35), skip_layer=11),
    "skip_6_45_s11": SkipViTSettings((6,), (0.45,), skip_layer=11),
    "skip_6_50_s11": SkipViTSettings((6,), (0.50,), skip_layer=11),
    "skip_6_55_s11": SkipViTSettings((6,), (0.55,), skip_layer=11),
}
# Beyond the paper: plain dropping (no skip, no fusion) at the headline ratio, and Table 3's configuration.
EXTRA: dict[str, SkipViTSettings] = {
    "drop_6_55": SkipViTSettings((6,), (0.55,), mode="drop"),
}
PRESETS: dict[str, SkipViTSettings] = {**TABLE1, **EXTRA}
TABLE3 = TABLE1["skip_4_7_30_s10"]


def preset(name: str) -> SkipViTSettings:
    """A named preset (``TABLE1`` rows plus ``EXTRA``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown SkipViT preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# ----------------------------------------------------------------------------------------------------------
# Token maths: pure tensor functions


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


def fuse_tokens(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """EViT's fused token: the weighted average of tokens x [B, M, C] with weights [B, M] → [B, 1, C].

    Weights are normalised to sum to 1 (EViT's code sums ``weight · token`` unnormalised; the paper says
    "weighted average").
    """
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return (weights.unsqueeze(-1).to(x.dtype) * x).sum(dim=1, keepdim=True)


# ----------------------------------------------------------------------------------------------------------
# The forward over the blocks


@dataclass
class Stage:
    """What one drop stage did, in original patch numbering (0 = first patch after the prefix tokens)."""

    layer: int
    scores: torch.Tensor  # [B, n_patches_at_stage] CLS attention of the patches present at this stage
    present: torch.Tensor  # [B, n_patches_at_stage] their original patch indices
    kept: torch.Tensor  # [B, n_kept] original patch indices kept
    dropped: torch.Tensor  # [B, n_dropped] original patch indices dropped


@contextlib.contextmanager
def _capture_output(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    captured: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda _m, _i, out: captured.__setitem__("out", out))
    try:
        yield captured
    finally:
        handle.remove()


def skipvit_blocks(
    blocks: Sequence[nn.Module],
    x: torch.Tensor,
    settings: SkipViTSettings,
    num_prefix_tokens: int = 1,
    trace: list[Stage] | None = None,
) -> torch.Tensor:
    """Run ``blocks`` over x [B, N, C] with token dropping; returns [B, N', C] (N' = N in skip mode).

    ``trace``, when given, receives one :class:`Stage` per drop layer (for the explorer and the tests).
    """
    B, N, _ = x.shape
    P = num_prefix_tokens
    stages = dict(zip(settings.drop_layers, settings.drop_ratios))
    index = torch.arange(N, device=x.device).expand(B, N)  # original position of each prefix/patch token
    held: list[tuple[torch.Tensor, torch.Tensor]] = []  # dropped (tokens [B, M, C], positions [B, M]) awaiting S
    fused: list[torch.Tensor] = []  # mode "fused": one [B, 1, C] token per stage, kept after the patches
    for layer, block in enumerate(blocks, start=1):
        if layer == settings.skip_layer and held:
            # Token-level skip connection: every held token rejoins at its original index as block S's input.
            x = reinsert_tokens(torch.cat([x, *(t for t, _ in held)], 1), torch.cat([index, *(i for _, i in held)], 1))
            index, held = torch.arange(N, device=x.device).expand(B, N), []
        if layer not in stages:
            x = block(x)
            continue
        with _capture_output(block.attn.qkv) as captured:
            x = block(x)
        n_patches = index.shape[1] - P
        with torch.set_grad_enabled(torch.is_grad_enabled() and settings.mode == "fused"):
            scores = cls_attention_from_qkv(captured["out"], block.attn)[:, P : P + n_patches]  # [B, n]
        reference = N - P if settings.ratio_of == "original" else n_patches
        n_drop = min(drop_count(stages[layer], reference), n_patches - 1)
        keep, drop = topk_keep_indices(scores.detach(), n_patches - n_drop)  # positions within the patches
        patches, positions = x[:, P : P + n_patches], index[:, P:]
        if trace is not None:
            trace.append(Stage(layer, scores.detach(), positions - P, gather_tokens(positions, keep) - P,
                               gather_tokens(positions, drop) - P))  # fmt: skip
        if settings.mode == "skip" and n_drop:
            held.append((gather_tokens(patches, drop), gather_tokens(positions, drop)))
        if settings.mode == "fused" and n_drop:
            fused.append(fuse_tokens(gather_tokens(patches, drop), gather_tokens(scores, drop)))
        x = torch.cat([x[:, :P], gather_tokens(patches, keep), *fused], 1)
        index = torch.cat([index[:, :P], gather_tokens(positions, keep)], 1)
    return x


# ----------------------------------------------------------------------------------------------------------
# Patching a timm VisionTransformer


class SkipViTMixin:
    """Mixed in before a timm VisionTransformer class by :func:`apply_skipvit`; reads ``self.skipvit``."""

    skipvit: SkipViTSettings

    def forward_features(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        if not self.skipvit.active:
            return super().forward_features(x, attn_mask=attn_mask, is_causal=is_causal)
        if attn_mask is not None or is_causal:
            raise ValueError("SkipViT token dropping does not support attn_mask / is_causal: switch dropping off")
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        x = skipvit_blocks(self.blocks, x, self.skipvit, self.num_prefix_tokens)
        return self.norm(x)


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
    from .models import check_is_vit

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
    return configure(model, settings)


def configure(model: nn.Module, settings: SkipViTSettings | str) -> nn.Module:
    """Replace the SkipViT settings of a patched model (checked against its depth); returns the model."""
    if not isinstance(model, SkipViTMixin):
        raise TypeError(f"{type(model).__name__} has no SkipViT patch: call apply_skipvit(model, settings) first")
    settings = preset(settings) if isinstance(settings, str) else settings
    settings.check_depth(len(model.blocks))
    model.skipvit = settings
    return model


def remove_skipvit(model: nn.Module) -> nn.Module:
    """Undo :func:`apply_skipvit`: the model is its stock timm class again."""
    if isinstance(model, SkipViTMixin):
        model.__class__ = next(c for c in type(model).__mro__[1:] if not issubclass(c, SkipViTMixin))
        del model.skipvit
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
    if not 0 <= fraction < 1:
        raise ValueError(f"warm-up fraction={fraction!r} is not allowed: expected [0, 1)")
    return math.floor(fraction * epochs + 0.5)


def warmup_hook(warmup_epochs: int) -> Callable[[nn.Module, int], None]:
    """``train(..., on_epoch_start=warmup_hook(W))``: no dropping in epochs 0 … W-1, dropping from epoch W on."""
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs={warmup_epochs!r} is not allowed: expected an integer >= 0")

    def hook(model: nn.Module, epoch: int) -> None:
        set_dropping(model, epoch >= warmup_epochs)

    return hook


def trace_forward(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[Stage]]:
    """Logits [B, classes] of a patched model and what each drop stage kept (no grad, eval as it is)."""
    trace: list[Stage] = []
    with torch.no_grad():
        x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(images))))
        if model.skipvit.active:
            x = skipvit_blocks(model.blocks, x, model.skipvit, model.num_prefix_tokens, trace)
        else:
            x = model.blocks(x)
        return model.forward_head(model.norm(x)), trace


def flop_gain(model: nn.Module, input_size: tuple[int, int, int], flops_off: float | None = None) -> dict[str, float]:
    """Forward FLOPs per image with dropping off and on, and the FLOP-ideal throughput gain (%).

    ``flops_off`` skips counting the dropping-off model again (it is the same for every setting of one model).
    """
    from .bench import flops_per_image

    with dropping(model, False):
        off = flops_per_image(model, input_size) if flops_off is None else flops_off
    with dropping(model, True):
        on = flops_per_image(model, input_size)
    return {"gflops_off": off / 1e9, "gflops_on": on / 1e9, "ideal_gain_pct": 100 * (off / on - 1)}
