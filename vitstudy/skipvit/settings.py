"""SkipViT settings: one frozen :class:`SkipViTSettings` per configuration, and the paper's rows as presets.

Layers are 1-indexed blocks ("6" = after the 6th block); the package docstring gives the full conventions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import check, check_choice

MODES = ("skip", "fused", "drop")
RATIO_OF = ("surviving", "original")
# Where in block L the tokens are ranked and dropped: after the whole block ("block", this study's reading of
# SkipViT's "attention block"), or inside it after the attention and before the MLP ("attention", where EViT's code
# does it: evit.py Block.forward, so the dropped tokens also skip block L's MLP).
PLACEMENTS = ("block", "attention")
# The fused token's weights: each dropped token's raw [CLS] attention ("raw", as EViT's code sums them: evit.py
# Block.forward), or those weights renormalised to sum to 1 ("normalised", the paper's "weighted average").
FUSE_WEIGHTS = ("raw", "normalised")


@dataclass(frozen=True)
class SkipViTSettings:
    """Where and how many patch tokens to drop, and where they come back. Layers are 1-indexed blocks."""

    drop_layers: tuple[int, ...] = ()
    drop_ratios: tuple[float, ...] = ()
    skip_layer: int | None = None  # mode "skip": the block whose input gets the dropped tokens back
    mode: str = "skip"
    ratio_of: str = "surviving"  # second-stage ratio: of the tokens reaching it (EViT) or of the original count
    enabled: bool = True  # False: the stock timm forward (warm-up, or evaluating with dropping off)
    placement: str | None = None  # None: "attention" for mode "fused" (EViT's computation), else "block"
    fuse_weights: str = "raw"  # mode "fused" only: EViT's unnormalised weights by default

    def __post_init__(self) -> None:
        layers = _as_tuple(self.drop_layers, "drop_layers")
        ratios = _as_tuple(self.drop_ratios, "drop_ratios")
        object.__setattr__(self, "drop_layers", layers)
        object.__setattr__(self, "drop_ratios", ratios)
        check_choice("mode", self.mode, MODES)
        check_choice("ratio_of", self.ratio_of, RATIO_OF)
        if self.placement is None:
            object.__setattr__(self, "placement", "attention" if self.mode == "fused" else "block")
        check_choice("placement", self.placement, PLACEMENTS)
        check_choice("fuse_weights", self.fuse_weights, FUSE_WEIGHTS)
        if len(layers) != len(ratios):
            raise ValueError(
                f"drop_layers={layers} and drop_ratios={ratios} have different lengths ({len(layers)} != "
                f"{len(ratios)}): give one ratio per drop layer"
            )
        for layer in layers:
            if not isinstance(layer, int) or isinstance(layer, bool) or layer < 1:
                raise ValueError(f"drop layer {layer!r} in drop_layers={layers} is not allowed: expected integers >= 1")
        check(all(a < b for a, b in zip(layers, layers[1:])), "drop_layers", layers, "strictly increasing layers")
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
            ok = self.skip_layer is None or (
                isinstance(self.skip_layer, int) and not (layers and self.skip_layer <= layers[-1])
            )
            after = f"an integer after the last drop layer ({layers[-1] if layers else 0})"
            check(ok, "skip_layer", self.skip_layer, f"{after}, i.e. >= {layers[-1] + 1 if layers else 1}")
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
        """The paper's Table 1 wording: '4,7 / 30%,30% / skip 10', '6 / 45% / fused token', 'baseline'; a
        placement or fused weighting other than the mode's default is named after it."""
        if not self.drop_layers:
            return "baseline"
        layers = ",".join(str(layer) for layer in self.drop_layers)
        ratios = ",".join(f"{100 * r:g}%" for r in self.drop_ratios)
        tail = {"skip": f"skip {self.skip_layer}", "fused": "fused token", "drop": "no skip"}[self.mode]
        if self.mode == "fused" and (self.placement, self.fuse_weights) != ("attention", "raw"):
            tail += f" (selected after the {self.placement}, {self.fuse_weights} weights)"
        elif self.mode != "fused" and self.placement == "attention":
            tail += " (selected after the attention)"
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
    "fused_6_45": SkipViTSettings((6,), (0.45,), mode="fused"),  # EViT's computation: in block 6, raw weights
    "skip_4_7_30_s10": SkipViTSettings((4, 7), (0.30, 0.30), skip_layer=10),
    "skip_4_7_30_s11": SkipViTSettings((4, 7), (0.30, 0.30), skip_layer=11),
    "skip_6_8_35_s10": SkipViTSettings((6, 8), (0.35, 0.35), skip_layer=10),
    "skip_6_8_35_s11": SkipViTSettings((6, 8), (0.35, 0.35), skip_layer=11),
    "skip_6_45_s11": SkipViTSettings((6,), (0.45,), skip_layer=11),
    "skip_6_50_s11": SkipViTSettings((6,), (0.50,), skip_layer=11),
    "skip_6_55_s11": SkipViTSettings((6,), (0.55,), skip_layer=11),
}
# Beyond the paper: plain dropping (no skip, no fusion) at the headline ratio.
EXTRA: dict[str, SkipViTSettings] = {
    "drop_6_55": SkipViTSettings((6,), (0.55,), mode="drop"),
}
PRESETS: dict[str, SkipViTSettings] = {**TABLE1, **EXTRA}
TABLE3 = TABLE1["skip_4_7_30_s10"]  # the paper's Table 3 (warm-up or not) uses this row
HEADLINE = "skip_6_55_s11"  # the paper's headline row: drop 55% after block 6, back at block 11 (+13.2%, -0.01 top-1)


def preset(name: str) -> SkipViTSettings:
    """A named preset (``TABLE1`` rows plus ``EXTRA``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown SkipViT preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
