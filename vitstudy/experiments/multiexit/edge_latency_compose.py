"""Notebook 10's "both methods at once": the per-sample exit on a backbone whose SkipViT dropping is on.

The two wrappers do not compose as they are: ``MultiExitViT`` runs the backbone's blocks itself (``run_blocks``)
and never calls its ``forward_features``, which is where SkipViT's patch lives, so a SkipViT-patched backbone inside
a ``MultiExitViT`` silently runs without dropping (a test shows it). :class:`SkipExitViT` routes each stretch of
blocks between two exits through ``skipvit.skipvit_blocks`` (the SkipViT core's own loop, its layers renumbered
for the stretch). That is exact when no exit falls inside SkipViT's drop region (from the first drop layer to the
skip layer): there the dropped tokens are held aside, and ``MultiExitViT``'s compaction (``compact``) would have to
compact them with the batch. :func:`compatible_exits` keeps the exits outside it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from ... import bench, skipvit
from ...config import check
from ...multiexit import ExitCosts, ExitStudy, MultiExitViT, exits_label, paired_loss_interval
from ...skipvit import SkipViTMixin, SkipViTSettings, skipvit_blocks
from .max_speed_exit import CONTROL_LABEL
from .real_data_exit import PER_SAMPLE_TARGET, timing_batch

EXIT_ARM, SKIP_ARM, BOTH_ARM = "per-sample exit", "SkipViT dropping", "both"


def drop_region(settings: SkipViTSettings) -> tuple[int, int]:
    """Blocks (1-indexed, inclusive) from SkipViT's first drop layer to its skip layer (or its last drop layer)."""
    marks = (*settings.drop_layers, *((settings.skip_layer,) if settings.skip_layer else ()))
    return min(marks), max(marks)


def compatible_exits(exits: Sequence[int], settings: SkipViTSettings) -> tuple[int, ...]:
    """The exits that do not cut SkipViT's drop region: an exit after block e cuts it when first <= e < last."""
    if not settings.active:
        return tuple(exits)
    first, last = drop_region(settings)
    return tuple(e for e in exits if not first <= e < last)


def segment_settings(settings: SkipViTSettings, start: int, stop: int) -> SkipViTSettings | None:
    """SkipViT's settings renumbered for blocks ``start+1 … stop``; None when the stretch has no drop layer."""
    first, last = drop_region(settings)
    if stop < first or start >= last:
        return None
    if not (start < first and last <= stop):
        raise ValueError(
            f"an exit after block {start if start >= first else stop} cuts SkipViT's drop region (blocks {first}–{last}"
            f" of {settings.label}): expected exits outside it, e.g. compatible_exits(exits, settings)"
        )
    skip = settings.skip_layer - start if settings.skip_layer else None
    return dataclasses.replace(
        settings, drop_layers=tuple(layer - start for layer in settings.drop_layers), skip_layer=skip
    )


class SkipExitViT(MultiExitViT):
    """A ``MultiExitViT`` whose backbone (a SkipViT-patched timm ViT) drops tokens as its own forward would."""

    def run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        settings = self.vit.skipvit
        stretch = segment_settings(settings, start, stop) if settings.active else None
        if stretch is None:
            return super().run_blocks(x, start, stop)
        return skipvit_blocks(self.vit.blocks[start:stop], x, stretch, self.vit.num_prefix_tokens)


def with_skipvit(model: MultiExitViT, settings: SkipViTSettings | str) -> SkipExitViT:
    """A copy of a fitted exit model (backbone and heads) with SkipViT ``settings`` applied to its backbone and
    dropping on; ``model`` is left as it was. Its exits must lie outside the drop region (:func:`compatible_exits`)."""
    settings = skipvit.preset(settings) if isinstance(settings, str) else settings
    check(
        compatible_exits(model.exits, settings) == model.exits,
        "exits",
        model.exits,
        f"exits outside SkipViT's drop region {drop_region(settings)} ({settings.label})",
    )
    composed = copy.deepcopy(model)  # the heads keep their sharing (finetune: one head on exits and final output)
    if not isinstance(composed.vit, SkipViTMixin):
        skipvit.apply_skipvit(composed.vit, settings)
    skipvit.configure(composed.vit, dataclasses.replace(settings, enabled=True))
    composed.__class__ = SkipExitViT  # the knobs, heads and forward stay; only run_blocks changes
    return composed


def composed_ideal(costs: ExitCosts, exits: Sequence[int], exit_block: torch.Tensor, skip_ideal: float) -> float:
    """FLOP-ideal speed-up of the exit on a dropping backbone, counted per image: an image leaving at an exit
    before the drop region pays what it pays without SkipViT; one running to the end pays the plain model's
    FLOPs divided by SkipViT's ideal, plus every exit head it passed."""
    per_exit = costs.per_exit(exits).clone()
    per_exit[-1] = costs.plain() / skip_ideal + len(exits) * costs.exit_head
    blocks = torch.tensor([*exits, costs.depth])
    index = (exit_block.reshape(-1, 1) == blocks).long().argmax(1)
    return costs.plain() / per_exit[index].mean().item()


def _correct(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model.eval()(images)
    return getattr(out, "logits", out).argmax(-1) == targets


def composition_table(
    study: ExitStudy,
    point: dict[str, Any],
    settings: SkipViTSettings | str,
    batch_size: int,
    timing: bench.CompareSettings,
    device: str = "cpu",
) -> tuple[pd.DataFrame, bench.Comparison]:
    """The per-sample exit at ``point`` (its exits outside the drop region), SkipViT dropping alone, both at once
    and the A/A control, timed on one batch of real test images; and the comparison.

    ``ideal_speedup`` of the ``both`` row is counted (:func:`composed_ideal`); ``product_of_ideals`` is the exit's
    FLOP ideal times SkipViT's, the yardstick of "does the saving compose", and ``measured_over_product`` the
    measured speed-up over it. Top-1 on the timed images beside each, with its paired interval against plain.
    """
    settings = skipvit.preset(settings) if isinstance(settings, str) else settings
    exits = compatible_exits(point["exits"], settings)
    check(
        bool(exits),
        "exits",
        point["exits"],
        f"at least one exit outside SkipViT's drop region {drop_region(settings)} ({settings.label})",
    )
    exit_model = study.configured(point["variant"], exits, point["threshold"], "sample")
    both = with_skipvit(exit_model, settings)
    images = timing_batch(study, batch_size)
    count = len(images)
    models = {"plain": study.vit, EXIT_ARM: exit_model, SKIP_ARM: both.vit, BOTH_ARM: both}
    comparison = bench.compare_models(models, images, timing, device)
    gain = skipvit.flop_gain(both.vit, study.splits.input_size)
    with torch.inference_mode():  # the timed batch's exits: the same in both exit arms (all before the drop region)
        exit_block = exit_model.eval()(images).exit_block
    ideals = {EXIT_ARM: study.costs.ideal_speedup(exits, exit_block), SKIP_ARM: gain["gflops_off"] / gain["gflops_on"]}
    ideals[BOTH_ARM] = composed_ideal(study.costs, exits, exit_block, ideals[SKIP_ARM])
    targets = study.features["test"].targets[:count]
    plain_correct = _correct(study.vit, images, targets)
    setting = f"{point['variant']}, exits {exits_label(exits)}, threshold {point['threshold']:g}"
    described = {EXIT_ARM: setting, SKIP_ARM: settings.label, BOTH_ARM: f"{setting} + {settings.label}"}
    rows = []
    for arm in (EXIT_ARM, SKIP_ARM, BOTH_ARM):
        loss, low, high = paired_loss_interval(plain_correct, _correct(models[arm], images, targets))
        rows.append(
            {
                "arm": arm,
                "setting": described[arm],
                **bench.speed_row(comparison, arm, count, ideals[arm], PER_SAMPLE_TARGET),
                "top1_loss": loss,
                "top1_loss_low": low,
                "top1_loss_high": high,
            }
        )
    product = ideals[EXIT_ARM] * ideals[SKIP_ARM]
    rows[-1] |= {
        "product_of_ideals": product,
        **{f"measured_over_product{end}": rows[-1][f"speedup{end}"] / product for end in ("", "_low", "_high")},
    }
    rows.append({"arm": CONTROL_LABEL, **bench.control_row(comparison, count)})
    exited_pct = 100 * (exit_block < study.depth).double().mean().item()
    frame = pd.DataFrame(rows).assign(
        batch_size=count, batch_exited_pct=exited_pct, **bench.protocol(comparison), note=bench.table_note(comparison)
    )
    return frame, comparison
