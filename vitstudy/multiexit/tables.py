"""The study's tables, named after the report's: Tables 5.1, 5.2, 5.3, the speed targets, the report beside ours.

Speeds are numbers (NaN when not measured) and every timed table carries a ``note`` column saying why a number
is missing; ratios of NaN stay NaN.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from .. import bench
from .costs import ExitCosts, exit_costs
from .exits import simulate
from .features import logits_from_features
from .model import DEFAULT_EXITS, VARIANTS, MultiExitViT
from .study import VARIANT_LABELS, ExitStudy, exits_label

# ----------------------------------------------------------------------------------------------------------
# Timing (today's protocol: bench.time_interleaved, one round-robin over the models per round)


def measure_interleaved(
    models: Mapping[str, torch.nn.Module],
    inputs: torch.Tensor,
    settings: bench.TimingSettings,
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """Images/s of several models on the same batch, their timed runs interleaved round-robin.

    A plain model and its exit variants are compared under the same load: on a shared machine, timing them one
    after the other lets load drift masquerade as a speed-up. Each round calls every model once (sync included);
    the median over ``settings.runs`` rounds is reported (``bench.timing_spread``). On an absent device every
    number is NaN and ``note`` says why.
    """
    device = torch.device(device)
    if not bench.device_available(device):
        missing = {"images_per_s": math.nan, "images_per_s_iqr": math.nan, "runs": 0,
                   "device": f"{device.type}: not available", "note": bench.NOT_MEASURED_NO_CUDA}  # fmt: skip
        return {name: dict(missing) for name in models}
    x = inputs.to(device)
    for model in models.values():
        model.to(device).eval()
    with torch.inference_mode():
        calls = {name: (lambda m=model: m(x)) for name, model in models.items()}
        seconds = bench.time_interleaved(calls, device, settings)
    env = bench.environment_info(device)
    rows = {}
    for name, values in seconds.items():
        spread = bench.timing_spread(values)
        rows[name] = {
            "images_per_s": len(x) / spread["seconds_median"],
            "images_per_s_iqr": len(x) / spread["seconds_p25"] - len(x) / spread["seconds_p75"],
            "runs": spread["runs"],
            "device": f"{env['device_type']}: {env['device_name']}",
            "cpu_threads": env["cpu_threads"],
            "torch": env["torch"],
            "timm": env["timm"],
            "note": "",
        }
    for model in models.values():
        model.to("cpu")
    return rows


def timing_batch(study: ExitStudy, batch_size: int) -> torch.Tensor:
    """The first ``batch_size`` test images as one tensor ``[B, C, H, W]`` (real data for timing)."""
    count = min(batch_size, len(study.splits.test))
    return torch.stack([study.splits.test[i][0] for i in range(count)])


def batch_exits(study: ExitStudy, model: MultiExitViT, batch_size: int) -> dict[str, float]:
    """Share of the timed batch (the first ``batch_size`` test images) that leaves early under ``model``'s
    settings, and the FLOP-ideal speed-up of that batch's exit histogram.

    Computed from the recorded features (``simulate`` reproduces the forward; tested), so no backbone runs here.
    """
    logits = logits_from_features(model, study.features["test"].first(batch_size))
    sim = simulate(logits, model.exits, study.depth, model.threshold, model.policy, model.confidence, batch_size)
    return {
        "batch_exited_pct": 100 * (sim.exit_block < study.depth).double().mean().item(),
        "batch_ideal_speedup": study.costs.ideal_speedup(model.exits, sim.exit_block),
    }


# Table 5.1 as saved by notebook 01: ours, the report's numbers beside them, then how it was measured.
TABLE_5_1_COLUMNS = (
    "setting", "exit_block", "images_per_s", "speedup", "ideal_speedup", "measured_over_ideal",
    "report_inference_speed_im_s", "report_speed_improvement", "gflops_per_image", "batch_size", "device", "note",
)  # fmt: skip


def table_5_1(
    vit: torch.nn.Module,
    input_size: tuple[int, int, int],
    batch_size: int,
    exits: Sequence[int] = DEFAULT_EXITS,
    settings: bench.TimingSettings | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Table 5.1: every image forced out after each exit vs the plain model, on random input.

    Measured speed-up next to the FLOP-ideal one (the FLOP ratio) and their quotient.
    """
    settings = settings or bench.TimingSettings()
    costs = exit_costs(MultiExitViT(vit, exits).eval(), input_size)
    models: dict[str, torch.nn.Module] = {"plain": vit}
    for block in exits:
        models[str(block)] = MultiExitViT(vit, exits, forced_exit=block).eval()
    inputs = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0))
    speed = measure_interleaved(models, inputs, settings, device)
    rows = [_speed_row("original (all blocks)", costs.depth, speed["plain"], speed["plain"], costs.plain(), costs)]
    for block in exits:
        label = f"forced exit after block {block}"
        rows.append(_speed_row(label, block, speed[str(block)], speed["plain"], costs.forced(block), costs))
    frame = pd.DataFrame(rows)
    frame["batch_size"] = batch_size
    frame["input_size"] = "x".join(map(str, input_size))
    return frame


def _speed_row(label: str, block: int, row: dict, plain: dict, flops: float, costs: ExitCosts) -> dict[str, Any]:
    speedup = row["images_per_s"] / plain["images_per_s"]
    ideal = costs.plain() / flops
    return {
        "setting": label,
        "exit_block": block,
        "images_per_s": row["images_per_s"],
        "speedup": speedup,
        "gflops_per_image": flops / 1e9,
        "ideal_speedup": ideal,
        "measured_over_ideal": speedup / ideal,
        "device": row["device"],
        "note": row["note"],
    }


def beside_report_5_1(table: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """:func:`table_5_1` with the report's images/s and speed-up beside each exit block, in the column order
    notebook 01 saves (:data:`TABLE_5_1_COLUMNS`); ``paper`` is ``reference.load_reference("multiexit_5.1")``."""
    wide = paper.pivot_table(index="exit_block", columns="metric", values="value").add_prefix("report_")
    return table.merge(wide, left_on="exit_block", right_index=True, how="left")[list(TABLE_5_1_COLUMNS)]


def table_5_2(
    study: ExitStudy,
    threshold: float,
    batch_size: int,
    settings: bench.TimingSettings,
    variants: Sequence[str] = VARIANTS,
    exit_sets: Sequence[tuple[int, ...]] = ((3,), (6,), (9,)),
    policies: Sequence[str] = ("batch", "sample"),
    device: str = "cpu",
) -> pd.DataFrame:
    """Table 5.2: variant x exit x policy at one threshold.

    Top-1 and exit shares come from the whole test set (offline); images/s from one batch of real test images,
    timed interleaved with the plain model on ``device``.
    """
    images = timing_batch(study, batch_size)
    settings_list = [(v, e, p) for v in variants for e in exit_sets for p in policies]
    models: dict[str, torch.nn.Module] = {"plain": study.vit}
    for variant, exits, policy in settings_list:
        # Copies share the backbone: only the knobs differ between the timed models.
        model = copy.copy(study.model(variant, exits))
        model.threshold, model.policy = threshold, policy
        models[f"{variant}/{exits_label(exits)}/{policy}"] = model
    speed = measure_interleaved(models, images, settings, device)
    plain = speed["plain"]["images_per_s"]
    rows = []
    for (variant, exits, policy), (name, model) in zip(settings_list, list(models.items())[1:]):
        row = study.evaluate(variant, exits, threshold, policy, batch_size)
        rows.append({
            **row,
            "images_per_s": speed[name]["images_per_s"],
            "plain_images_per_s": plain,
            "speedup": speed[name]["images_per_s"] / plain,
            **batch_exits(study, model, len(images)),
            "device": speed[name]["device"],
            "note": speed[name]["note"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def beside_report(table: pd.DataFrame, paper: pd.DataFrame, prefix: str = "report_") -> pd.DataFrame:
    """Add the report's top-1, speed-up and images/s (Table 5.2 or 5.3, long format) beside matching rows.

    Rows match on variant (the report's Same / Fine-Tune / Scratch) and single exit block; ``separate`` and
    multi-exit rows have no counterpart and keep empty report columns. Filter ``paper`` to one device first.
    """
    wide = paper.pivot_table(index=["classifier", "exit_block"], columns="metric", values="value").reset_index()
    wide["variant"] = wide["classifier"].map({label: name for name, label in VARIANT_LABELS.items()})
    wide["exits"] = wide["exit_block"].astype(str)
    names = {"accuracy_pct": "top1", "speed_improvement": "speedup", "inference_speed_im_s": "images_per_s"}
    wide = wide.rename(columns={k: prefix + v for k, v in names.items()})
    keep = ["variant", "exits", *(prefix + v for v in names.values() if prefix + v in wide)]
    return table.merge(wide[keep], on=["variant", "exits"], how="left")


def table_5_3(
    study: ExitStudy,
    threshold: float,
    batch_size: int,
    settings: bench.TimingSettings,
    variants: Sequence[str] = ("same", "finetune", "separate"),
    exit_sets: Sequence[tuple[int, ...]] = ((3,), (6,), (9,)),
    policies: Sequence[str] = ("batch", "sample"),
    devices: Sequence[str] = ("cpu", "cuda"),
) -> pd.DataFrame:
    """Table 5.3: the Table 5.2 measurements once per device, side by side (``cpu_*``, ``cuda_*`` columns).

    A device that is not present has NaN in its columns, and ``note`` names its columns and says why.
    """
    keys = ["variant", "exits", "policy", "threshold", "top1", "top1_loss", "exited_pct", "ideal_speedup"]
    timed = ("images_per_s", "plain_images_per_s", "speedup", "device")
    merged, notes = None, []
    for device in devices:
        part = table_5_2(study, threshold, batch_size, settings, variants, exit_sets, policies, device)
        notes.append(part["note"].map(lambda note, d=device: f"{d} columns: {note}" if note else ""))
        part = part[[*keys, *timed]].rename(columns={c: f"{device}_{c}" for c in timed})
        merged = part if merged is None else merged.merge(part, on=keys)
    merged["note"] = ["; ".join(n for n in row if n) for row in zip(*notes)]
    return merged


def measured_points(
    study: ExitStudy,
    points: Sequence[dict[str, Any]],
    batch_size: int,
    settings: bench.TimingSettings,
    device: str = "cpu",
) -> pd.DataFrame:
    """Measured per-sample speed-up of a few (variant, exits, threshold) points, for the sweep's curves."""
    images = timing_batch(study, batch_size)
    models: dict[str, torch.nn.Module] = {"plain": study.vit}
    for i, point in enumerate(points):
        model = copy.copy(study.model(point["variant"], point["exits"]))
        model.threshold, model.policy = point["threshold"], "sample"
        models[str(i)] = model
    speed = measure_interleaved(models, images, settings, device)
    rows = []
    for i, point in enumerate(points):
        row = study.evaluate(point["variant"], point["exits"], point["threshold"], "sample")
        rows.append({
            **row,
            "speedup": speed[str(i)]["images_per_s"] / speed["plain"]["images_per_s"],
            "images_per_s": speed[str(i)]["images_per_s"],
            **batch_exits(study, models[str(i)], len(images)),
            "note": speed[str(i)]["note"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def performance_table(
    study: ExitStudy,
    point: dict[str, Any],
    batch_size: int,
    settings: bench.TimingSettings,
    device: str = "cpu",
) -> pd.DataFrame:
    """The three speed targets on the baseline: forced exit vs FLOP-ideal, per-sample exit, no-exit overhead."""
    images = timing_batch(study, batch_size)
    per_sample = copy.copy(study.model(point["variant"], point["exits"]))
    per_sample.threshold, per_sample.policy = point["threshold"], "sample"
    idle = MultiExitViT(study.vit, DEFAULT_EXITS, threshold=1.0, policy="sample").eval()
    models: dict[str, torch.nn.Module] = {"plain": study.vit, "per_sample": per_sample, "idle": idle}
    for block in DEFAULT_EXITS:
        models[f"forced_{block}"] = MultiExitViT(study.vit, DEFAULT_EXITS, forced_exit=block).eval()
    speed = measure_interleaved(models, images, settings, device)
    plain = speed["plain"]["images_per_s"]
    rows = []
    for block in DEFAULT_EXITS:
        ideal = study.costs.plain() / study.costs.forced(block)
        label = f"forced exit after block {block}"
        rows.append(
            _target_row(label, speed[f"forced_{block}"]["images_per_s"], plain, ideal, "measured / ideal >= 0.97")
        )
    exits_on_batch = batch_exits(study, per_sample, len(images))
    test = study.evaluate(point["variant"], point["exits"], point["threshold"], "sample")
    label = (
        f"per-sample exit: {point['variant']}, exits {exits_label(point['exits'])}, threshold {point['threshold']:g}"
    )
    row = _target_row(label, speed["per_sample"]["images_per_s"], plain, exits_on_batch["batch_ideal_speedup"],
                      "speed-up >= 2 at top-1 loss <= 0.5 points; measured / ideal >= 0.9")  # fmt: skip
    row.update(test_top1=test["top1"], test_top1_loss=test["top1_loss"], test_ideal_speedup=test["ideal_speedup"],
               test_exited_pct=test["exited_pct"], batch_exited_pct=exits_on_batch["batch_exited_pct"])  # fmt: skip
    rows.append(row)
    row = _target_row("exit machinery, nothing exits (exits 3,6,9, threshold 1.0)", speed["idle"]["images_per_s"],
                      plain, 1.0, "overhead <= 3 %")  # fmt: skip
    row["overhead_pct"] = 100 * (plain / speed["idle"]["images_per_s"] - 1)
    row["batch_exited_pct"] = batch_exits(study, idle, len(images))["batch_exited_pct"]
    rows.append(row)
    frame = pd.DataFrame(rows)
    frame["batch_size"] = len(images)
    frame["runs"] = speed["plain"]["runs"]
    frame["device"] = speed["plain"]["device"]
    frame["note"] = speed["plain"]["note"]
    return frame


def _target_row(label: str, speed: float, plain: float, ideal: float, target: str) -> dict[str, Any]:
    return {
        "measurement": label,
        "images_per_s": speed,
        "plain_images_per_s": plain,
        "speedup": speed / plain,
        "ideal_speedup": ideal,
        "measured_over_ideal": speed / plain / ideal,
        "target": target,
    }
