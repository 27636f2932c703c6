"""The paper's second open question: does the headline setting's gain hold on larger models?

The headline row (drop 55 % after block 6 of 12, re-insert at block 11) is scaled with depth by keeping the
same *fractions* of the network: drop after block ``round(6/12 · depth)``, re-insert at ``round(11/12 · depth)``,
ratio unchanged. ViT-S and ViT-B (12 blocks) keep 6 / 11; ViT-L (24 blocks) drops after block 12 and re-inserts
at 22 (the dropped tokens skip 9 of 24 blocks, as they skip 4.5 of 12 — rounding gives 4 of 12 at depth 12).

Per model: the FLOP-ideal speed-up, the activation memory saved for backward (:mod:`.memory`), and — where the
CPU allows — the measured training-step speed-up from the comparison engine with an A/A control.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from .. import bench
from ..models import create_model
from .memory import MIB, saved_activation_bytes
from .patch import apply_skipvit, configure, dropping, flop_gain
from .settings import BASELINE, SkipViTSettings
from .timing import CONTROL, TARGET, training_step_arm

MODELS = {"ViT-S/16": "vit_small_patch16_224", "ViT-B/16": "vit_base_patch16_224", "ViT-L/16": "vit_large_patch16_224"}
HEADLINE_FRACTIONS = (6 / 12, 11 / 12)  # drop layer and skip layer as fractions of the depth
HEADLINE_RATIO = 0.55


def scaled_headline(depth: int) -> SkipViTSettings:
    """6 / 55 % / skip 11 scaled to ``depth`` blocks: the same fractions of the network (module docstring)."""
    drop, skip = (max(1, round(f * depth)) for f in HEADLINE_FRACTIONS)
    return SkipViTSettings((drop,), (HEADLINE_RATIO,), skip_layer=max(skip, drop + 1))


def model_size_rows(
    models: dict[str, str] = MODELS,
    batch_size: int = 2,
    timed: tuple[str, ...] = ("ViT-S/16", "ViT-B/16"),
    timing: bench.CompareSettings | None = None,
    img_size: int = 224,
    device: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per model: depth, the scaled setting, FLOP-ideal speed-up, saved activation MiB per image off and
    on, and for the ``timed`` models the measured training-step speed-up (95 % interval) with its A/A control;
    the others say "not timed". Returns (table, the comparisons' raw per-block times)."""
    device = device or bench.default_device()
    # One process per (round, arm), as notebook 04 times ViT-S/16: in-process training steps of large models read
    # biased A/A controls on this CPU (figures/tables/04_aa_isolation_vit_small.md).
    timing = timing or bench.CompareSettings(rounds=3, min_run_time=0.5, warmup_calls=1, isolation="process")
    input_size = (3, img_size, img_size)
    out, raws = [], []
    for label, name in models.items():
        torch.manual_seed(0)
        model = apply_skipvit(create_model(name, img_size=img_size))
        depth = len(model.blocks)
        settings = scaled_headline(depth)
        gain = flop_gain(configure(model, settings), input_size)
        images, targets = torch.randn(1, *input_size), torch.randint(0, 1000, (1,))
        with dropping(model, False):
            saved_off = saved_activation_bytes(model, images, targets)
        saved_on = saved_activation_bytes(model, images, targets)
        del model
        row: dict[str, Any] = {
            "model": label, "timm_name": name, "depth": depth, "setting": settings.label,
            "ideal_speedup": gain["gflops_off"] / gain["gflops_on"], "gflops_off": gain["gflops_off"],
            "saved_mib_per_image_off": saved_off / MIB, "saved_mib_per_image_on": saved_on / MIB,
            "memory_saving_pct": 100 * (1 - saved_on / saved_off),
        }  # fmt: skip
        if label in timed:
            row.update(_timed(label, name, settings, input_size, batch_size, device, timing, raws))
        else:
            row.update(dict.fromkeys(("speedup", "speedup_low", "speedup_high", "control_speedup"), math.nan),
                       note="not timed: a training step is too slow on this CPU")  # fmt: skip
        row["measured_over_ideal"] = row["speedup"] / row["ideal_speedup"]
        row["verdict"] = bench.flop_bound_verdict(row["measured_over_ideal"], TARGET)
        out.append(row)
    raw = pd.concat(raws, ignore_index=True) if raws else pd.DataFrame()
    return pd.DataFrame(out), raw


def _timed(label, name, settings, input_size, batch_size, device, timing, raws) -> dict[str, Any]:
    """The comparison engine on three arms: baseline, the scaled headline row, an A/A copy of the baseline."""
    common = dict(model_name=name, input_size=input_size, num_classes=1000, batch_size=batch_size, device=device,
                  model_kwargs={"img_size": input_size[-1]})  # fmt: skip
    arms = {
        "baseline": bench.ArmSpec(training_step_arm, dict(settings=BASELINE, **common)),
        "headline": bench.ArmSpec(training_step_arm, dict(settings=settings, **common)),
        CONTROL: bench.ArmSpec(training_step_arm, dict(settings=BASELINE, **common)),
    }
    comparison = bench.compare(arms, "baseline", CONTROL, timing, device)
    raws.append(comparison.raw.assign(model=label))
    speed = comparison.speedup("headline")
    return {"speedup": speed["speedup"], "speedup_low": speed["speedup_low"], "speedup_high": speed["speedup_high"],
            "control_speedup": comparison.control_speedup, "batch_size": batch_size, "rounds": timing.rounds,
            "device": comparison.environment.get("device_name", ""),
            "threads": comparison.environment["cpu_threads"], "isolation": timing.isolation,
            "note": comparison.note or comparison.control_note()}  # fmt: skip


def model_size_budget(scale: str) -> dict[str, Any]:
    """Keyword arguments of :func:`model_size_rows` per scale: smoke shrinks everything (numbers meaningless)."""
    if scale == "smoke":
        timing = bench.CompareSettings(rounds=2, min_run_time=0.01, warmup_calls=1, bootstrap=200)
        return dict(models={"ViT-S/16": MODELS["ViT-S/16"]}, img_size=64, timed=("ViT-S/16",), timing=timing)
    return {}
