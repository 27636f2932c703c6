"""Notebook 04's placement question: is SkipViT's "attention block" the whole block or only its attention?

The paper drops tokens in "the SkipViT attention block" without saying whether the dropped tokens still pass that
block's MLP. Both readings are supported (:data:`vitstudy.skipvit.PLACEMENTS`): ``"block"`` ranks and drops after
the whole block L (the dropped tokens ran its MLP), ``"attention"`` inside block L after the attention, before the
MLP (where EViT's code drops: the dropped tokens also skip block L's MLP, so it saves a little more).
:func:`placement_ideals` gives both FLOP ideals for every Table 1 row; notebook 04 times the headline row in both
readings on ViT-S/16 (:data:`TIMED_VARIANTS`, one more arm of its ViT-S/16 comparison) and :func:`placement_table`
sets them side by side. The from-scratch study (notebook 08) trains SkipViT's own rows with ``"block"`` only.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from ...models import create_model
from ...reference import load_reference
from ...skipvit import BASELINE, HEADLINE, PLACEMENTS, TABLE1, SkipViTSettings, apply_skipvit, configure, flop_gain
from .skipvit_speed import CONTROL

# The headline row, dropping after the attention: timed beside the headline row (which drops after the block).
ATTENTION_HEADLINE = f"{HEADLINE}_after_attention"
TIMED_VARIANTS: dict[str, SkipViTSettings] = {
    ATTENTION_HEADLINE: dataclasses.replace(TABLE1[HEADLINE], placement="attention"),
}


def placement_ideals(
    model_name: str, input_size: tuple[int, int, int], num_classes: int = 1000, **model_kwargs
) -> pd.DataFrame:
    """Per Table 1 row with dropping: its forward GFLOPs per image and FLOP-ideal speed-up when tokens are
    dropped after the whole block and after the attention, which placement the row uses by default, and the
    paper's measured gain beside them (``paper_speedup``: 1 + its throughput gain)."""
    paper = load_reference("skipvit_1")
    paper_speedup = dict(zip(TABLE1, 1 + paper["throughput_gain_pct"].to_numpy() / 100, strict=True))
    model = apply_skipvit(create_model(model_name, num_classes=num_classes, **model_kwargs))
    off = flop_gain(configure(model, BASELINE), input_size)["gflops_off"] * 1e9
    out = []
    for row, settings in TABLE1.items():
        if not settings.drop_layers:
            continue
        record = {"row": row, "setting": settings.label, "model": model_name, "default_placement": settings.placement}
        for placement in PLACEMENTS:
            gain = flop_gain(configure(model, dataclasses.replace(settings, placement=placement)), input_size, off)
            record[f"gflops_{placement}"] = gain["gflops_on"]
            record[f"ideal_speedup_{placement}"] = 1 + gain["ideal_gain_pct"] / 100
        record["paper_speedup"] = paper_speedup[row]
        out.append(record)
    return pd.DataFrame(out)


def placement_table(vit_small_speed: pd.DataFrame, ideals: pd.DataFrame) -> pd.DataFrame:
    """The headline row timed on ViT-S/16 in both placements (from notebook 04's ViT-S/16 speed table, which
    includes :data:`TIMED_VARIANTS` and the A/A control): speed-up with its interval, FLOP ideal, measured ÷
    ideal and verdict, one row per placement, then the A/A control row."""
    speed = vit_small_speed.set_index("row")
    ideal = ideals.set_index("row").loc[HEADLINE]
    columns = [
        "images_per_s",
        "speedup",
        "speedup_low",
        "speedup_high",
        "ideal_speedup",
        "measured_over_ideal",
        "verdict",
        "note",
    ]
    out = []
    for placement, row in (("block", HEADLINE), ("attention", ATTENTION_HEADLINE), (None, CONTROL)):
        if row not in speed.index:
            continue
        record = {
            "row": row,
            "setting": speed.loc[row, "setting"],
            "placement": placement or "A/A control",
            **{c: speed.loc[row, c] for c in columns if c in speed.columns},
        }
        if placement is not None:
            record["flop_ideal_from_counts"] = ideal[f"ideal_speedup_{placement}"]
        out.append(record)
    return pd.DataFrame(out)
