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
from ..config import check
from ..models import forward_start
from .costs import exit_costs
from .exits import compact, confidence, simulate
from .features import logits_from_features
from .model import DEFAULT_EXITS, VARIANTS, MultiExitViT
from .study import VARIANT_LABELS, ExitStudy, exits_label

# ----------------------------------------------------------------------------------------------------------
# Timing: every timed table goes through the comparison engine (bench.compare) with an A/A control

CONTROL_ARM = "plain (A/A copy)"  # a deep copy of the plain model, timed as one more arm
CONTROL_LABEL = "A/A control: plain vs its copy"
FORCED_TARGET = (0.97, 1.03)  # forced exits run the same blocks, fewer of them: no excess over the FLOP ideal
FORCED_INTERVAL = (0.95, 1.05)  # issue 8: the measured ÷ ideal interval must lie inside this too
PER_SAMPLE_TARGET = (0.90, 1.03)  # the per-sample exit pays confidences and compaction the FLOP count leaves out


def time_models(
    models: Mapping[str, torch.nn.Module],
    inputs: torch.Tensor,
    settings: bench.CompareSettings,
    device: str | torch.device = "cpu",
) -> bench.Comparison:
    """Time one forward of each model on the same batch with :func:`bench.compare`; ``models["plain"]`` is the
    baseline and a deep copy of it, :data:`CONTROL_ARM`, is always added as the A/A control.

    Models run in eval mode under ``torch.inference_mode`` on ``device`` and go back to the CPU afterwards. On an
    absent device nothing runs: the comparison is empty and its ``note`` says why.
    """
    check("plain" in models, "models", list(models), "a mapping with a 'plain' entry (the baseline)")
    device = torch.device(device)
    models = {**models, CONTROL_ARM: copy.deepcopy(models["plain"])}
    available = bench.device_available(device)
    x = inputs.to(device) if available else inputs
    try:
        for model in models.values():
            model.eval().to(device if available else "cpu")
        with torch.inference_mode():
            arms = {name: (lambda m=model: m(x)) for name, model in models.items()}
            return bench.compare(arms, "plain", CONTROL_ARM, settings, device)
    finally:
        for model in models.values():
            model.to("cpu")


def protocol(comparison: bench.Comparison) -> dict[str, Any]:
    """How a comparison was timed, for every row of its table: device, threads, rounds, seconds per arm and round."""
    env = comparison.environment
    return {
        "device": f"{env['device_type']}: {env['device_name']}",
        "threads": env["cpu_threads"],
        "rounds": comparison.settings.rounds,
        "min_run_time_s": comparison.settings.min_run_time,
        "isolation": comparison.settings.isolation,
    }


def table_note(comparison: bench.Comparison) -> str:
    """The ``note`` of a timed table: why nothing was measured, or what the A/A control says (empty if fine)."""
    return comparison.note or comparison.control_note()


def speed_columns(
    comparison: bench.Comparison, arm: str, rows: int, ideal: float, target: tuple[float, float]
) -> dict[str, Any]:
    """One arm's measured speed-up over the plain model with its 95% interval, beside its FLOP-ideal speed-up.

    ``measured_over_ideal`` is a ratio of speed-ups (not of gains); ``verdict`` is ``bench.flop_bound_verdict``.
    """
    speed = comparison.speedup(arm)
    over = speed["speedup"] / ideal
    return {
        "images_per_s": rows / speed["seconds"],
        "speedup": speed["speedup"],
        "speedup_low": speed["speedup_low"],
        "speedup_high": speed["speedup_high"],
        "ideal_speedup": ideal,
        "measured_over_ideal": over,
        "measured_over_ideal_low": speed["speedup_low"] / ideal,
        "measured_over_ideal_high": speed["speedup_high"] / ideal,
        "verdict": bench.flop_bound_verdict(over, target),
    }


def forced_exit_verdict(measured_over_ideal: float, low: float, high: float) -> str:
    """A forced exit's verdict: ``bench.flop_bound_verdict`` against :data:`FORCED_TARGET`, where a point estimate
    inside the target meets it only when its interval (``low``, ``high``) lies inside :data:`FORCED_INTERVAL` too."""
    verdict = bench.flop_bound_verdict(measured_over_ideal, FORCED_TARGET)
    if not FORCED_TARGET[0] <= measured_over_ideal <= FORCED_TARGET[1]:
        return verdict
    lo, hi = FORCED_INTERVAL
    if lo <= low and high <= hi:
        return f"within target ({FORCED_TARGET[0]:g}–{FORCED_TARGET[1]:g}, interval inside {lo:g}–{hi:g})"
    return (f"point within {FORCED_TARGET[0]:g}–{FORCED_TARGET[1]:g}, but interval {low:.2f}–{high:.2f} not inside "
            f"{lo:g}–{hi:g}: not resolved")


def control_columns(comparison: bench.Comparison, rows: int) -> dict[str, Any]:
    """The A/A control's row: the plain model against its copy, which must read 1.00 within ±3%."""
    columns = speed_columns(comparison, CONTROL_ARM, rows, 1.0, (1 - bench.CONTROL_TOLERANCE,
                                                                    1 + bench.CONTROL_TOLERANCE))  # fmt: skip
    reading = columns["speedup"]
    if math.isnan(reading):
        columns["verdict"] = "not measured"
    else:
        inside = abs(reading - 1) <= bench.CONTROL_TOLERANCE
        columns["verdict"] = f"{'within' if inside else 'outside'} 1.00 ± {bench.CONTROL_TOLERANCE:.0%}"
    return columns


def raw_times(comparison: bench.Comparison, **labels: Any) -> pd.DataFrame:
    """The comparison's raw per-call times (``bench.Comparison.raw``) with the protocol and ``labels`` as columns."""
    return comparison.raw.assign(**protocol(comparison), **labels)


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
    "setting", "exit_block", "images_per_s", "speedup", "speedup_low", "speedup_high", "ideal_speedup",
    "measured_over_ideal", "measured_over_ideal_low", "measured_over_ideal_high", "verdict",
    "report_inference_speed_im_s", "report_speed_improvement", "gflops_per_image", "batch_size", "device", "threads",
    "rounds", "note",
)  # fmt: skip


def table_5_1(
    vit: torch.nn.Module,
    input_size: tuple[int, int, int],
    batch_size: int,
    exits: Sequence[int] = DEFAULT_EXITS,
    settings: bench.CompareSettings | None = None,
    device: str = "cpu",
) -> tuple[pd.DataFrame, bench.Comparison]:
    """Table 5.1: every image forced out after each exit vs the plain model, on random input; and its comparison.

    Measured speed-up (95% interval) next to the FLOP-ideal one, their quotient and its verdict against
    :data:`FORCED_TARGET`; the last row is the A/A control (``exit_block`` empty).
    """
    settings = settings or bench.CompareSettings()
    costs = exit_costs(MultiExitViT(vit, exits).eval(), input_size)
    models: dict[str, torch.nn.Module] = {"plain": vit}
    for block in exits:
        models[str(block)] = MultiExitViT(vit, exits, forced_exit=block).eval()
    inputs = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0))
    comparison = time_models(models, inputs, settings, device)
    rows = [{"setting": "original (all blocks)", "exit_block": costs.depth, "gflops_per_image": costs.plain() / 1e9,
             **speed_columns(comparison, "plain", batch_size, 1.0, FORCED_TARGET)}]  # fmt: skip
    for block in exits:
        ideal = costs.plain() / costs.forced(block)
        columns = speed_columns(comparison, str(block), batch_size, ideal, FORCED_TARGET)
        columns["verdict"] = forced_exit_verdict(columns["measured_over_ideal"], columns["measured_over_ideal_low"],
                                                 columns["measured_over_ideal_high"])  # fmt: skip
        rows.append({"setting": f"forced exit after block {block}", "exit_block": block,
                     "gflops_per_image": costs.forced(block) / 1e9, **columns})  # fmt: skip
    rows.append({"setting": CONTROL_LABEL, "exit_block": None, "gflops_per_image": costs.plain() / 1e9,
                 **control_columns(comparison, batch_size)})  # fmt: skip
    frame = pd.DataFrame(rows).astype({"exit_block": "Int64"})
    frame["verdict"] = frame["verdict"].where(frame["setting"] != "original (all blocks)", "baseline")
    frame = frame.assign(batch_size=batch_size, input_size="x".join(map(str, input_size)), **protocol(comparison),
                         note=table_note(comparison))  # fmt: skip
    return frame, comparison


def beside_report_5_1(table: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """:func:`table_5_1` with the report's images/s and speed-up beside each exit block, in the column order
    notebook 01 saves (:data:`TABLE_5_1_COLUMNS`); ``paper`` is ``reference.load_reference("multiexit_5.1")``."""
    wide = paper.pivot_table(index="exit_block", columns="metric", values="value").add_prefix("report_")
    wide.index = wide.index.astype("Int64")
    return table.merge(wide, left_on="exit_block", right_index=True, how="left")[list(TABLE_5_1_COLUMNS)]


def _setting_name(variant: str, exits: Sequence[int], policy: str) -> str:
    return f"{variant}/{exits_label(exits)}/{policy}"


def table_5_2(
    study: ExitStudy,
    threshold: float,
    batch_size: int,
    settings: bench.CompareSettings,
    variants: Sequence[str] = VARIANTS,
    exit_sets: Sequence[tuple[int, ...]] = ((3,), (6,), (9,)),
    policies: Sequence[str] = ("batch", "sample"),
    device: str = "cpu",
) -> tuple[pd.DataFrame, bench.Comparison]:
    """Table 5.2: variant x exit x policy at one threshold, then the A/A control row; and its comparison.

    Top-1 and exit shares come from the whole test set (offline); speed-ups from one batch of real test images,
    every setting timed against the plain model by ``bench.compare``. ``ideal_speedup`` is the FLOP-ideal of the
    whole test set's exits, ``batch_ideal_speedup`` that of the timed batch (what ``measured_over_ideal`` uses).
    """
    images = timing_batch(study, batch_size)
    settings_list = [(v, e, p) for v in variants for e in exit_sets for p in policies]
    models: dict[str, torch.nn.Module] = {"plain": study.vit}
    for variant, exits, policy in settings_list:
        # Copies share the backbone: only the knobs differ between the timed models.
        model = copy.copy(study.model(variant, exits))
        model.threshold, model.policy = threshold, policy
        models[_setting_name(variant, exits, policy)] = model
    comparison = time_models(models, images, settings, device)
    rows = []
    for variant, exits, policy in settings_list:
        name = _setting_name(variant, exits, policy)
        batch = batch_exits(study, models[name], len(images))
        target = PER_SAMPLE_TARGET if policy == "sample" else FORCED_TARGET
        speed = speed_columns(comparison, name, len(images), batch["batch_ideal_speedup"], target)
        offline = study.evaluate(variant, exits, threshold, policy, batch_size)
        rows.append({"setting": name, **offline, **speed, "ideal_speedup": offline["ideal_speedup"], **batch})
    rows.append({"setting": CONTROL_LABEL, "threshold": threshold, **control_columns(comparison, len(images))})
    frame = pd.DataFrame(rows)
    frame["plain_images_per_s"] = len(images) / comparison.speedup("plain")["seconds"]
    frame = frame.assign(timed_batch_size=len(images), **protocol(comparison), note=table_note(comparison))
    return frame, comparison


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
    settings: bench.CompareSettings,
    variants: Sequence[str] = ("same", "finetune", "separate"),
    exit_sets: Sequence[tuple[int, ...]] = ((3,), (6,), (9,)),
    policies: Sequence[str] = ("batch", "sample"),
    devices: Sequence[str] = ("cpu", "cuda"),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 5.3: the Table 5.2 measurements once per device, side by side (``cpu_*``, ``cuda_*`` columns), and
    the raw times of every device's comparison (a ``device`` column tells them apart).

    A device that is not present has NaN in its columns, and ``note`` names its columns and says why.
    """
    keys = ["setting", "variant", "exits", "policy", "threshold", "top1", "top1_loss", "exited_pct", "ideal_speedup"]
    timed = ("images_per_s", "plain_images_per_s", "speedup", "speedup_low", "speedup_high", "measured_over_ideal",
             "verdict", "device", "threads", "rounds")  # fmt: skip
    merged, notes, raws = None, [], []
    for device in devices:
        part, comparison = table_5_2(study, threshold, batch_size, settings, variants, exit_sets, policies, device)
        raws.append(raw_times(comparison))
        notes.append(part["note"].map(lambda note, d=device: f"{d} columns: {note}" if note else ""))
        part = part[[*keys, *timed]].rename(columns={c: f"{device}_{c}" for c in timed})
        merged = part if merged is None else merged.merge(part.drop(columns=keys[1:]), on="setting")
    merged["note"] = ["; ".join(n for n in row if n) for row in zip(*notes)]
    return merged, pd.concat(raws, ignore_index=True)


def measured_points(
    study: ExitStudy,
    points: Sequence[dict[str, Any]],
    batch_size: int,
    settings: bench.CompareSettings,
    device: str = "cpu",
) -> tuple[pd.DataFrame, bench.Comparison]:
    """Measured per-sample speed-up (95% interval) of a few (variant, exits, threshold) points, for the sweep's
    curves, then the A/A control row; and the comparison."""
    images = timing_batch(study, batch_size)
    models: dict[str, torch.nn.Module] = {"plain": study.vit}
    for i, point in enumerate(points):
        model = copy.copy(study.model(point["variant"], point["exits"]))
        model.threshold, model.policy = point["threshold"], "sample"
        models[str(i)] = model
    comparison = time_models(models, images, settings, device)
    rows = []
    for i, point in enumerate(points):
        row = study.evaluate(point["variant"], point["exits"], point["threshold"], "sample")
        batch = batch_exits(study, models[str(i)], len(images))
        speed = speed_columns(comparison, str(i), len(images), batch["batch_ideal_speedup"], PER_SAMPLE_TARGET)
        rows.append({**row, **speed, "ideal_speedup": row["ideal_speedup"], **batch})
    rows.append({"variant": CONTROL_LABEL, **control_columns(comparison, len(images))})
    frame = pd.DataFrame(rows).assign(timed_batch_size=len(images), **protocol(comparison),
                                      note=table_note(comparison))  # fmt: skip
    return frame, comparison


def performance_table(
    study: ExitStudy,
    point: dict[str, Any],
    batch_size: int,
    settings: bench.CompareSettings,
    device: str = "cpu",
) -> tuple[pd.DataFrame, bench.Comparison]:
    """The speed targets on the baseline, timed in one comparison: forced exits vs their FLOP ideal, the per-sample
    exit at ``point`` (with its test top-1 loss and 95% paired interval), the exit machinery when nothing exits,
    and the A/A control."""
    images = timing_batch(study, batch_size)
    per_sample = copy.copy(study.model(point["variant"], point["exits"]))
    per_sample.threshold, per_sample.policy = point["threshold"], "sample"
    idle = MultiExitViT(study.vit, DEFAULT_EXITS, threshold=1.0, policy="sample").eval()
    models: dict[str, torch.nn.Module] = {"plain": study.vit, "per_sample": per_sample, "idle": idle}
    for block in DEFAULT_EXITS:
        models[f"forced_{block}"] = MultiExitViT(study.vit, DEFAULT_EXITS, forced_exit=block).eval()
    comparison = time_models(models, images, settings, device)
    rows = []
    for block in DEFAULT_EXITS:
        ideal = study.costs.plain() / study.costs.forced(block)
        speed = speed_columns(comparison, f"forced_{block}", len(images), ideal, FORCED_TARGET)
        rows.append({"measurement": f"forced exit after block {block}", **speed,
                     "target": f"measured / ideal in {FORCED_TARGET}"})  # fmt: skip
    exits_on_batch = batch_exits(study, per_sample, len(images))
    test = study.evaluate(point["variant"], point["exits"], point["threshold"], "sample")
    loss, low, high = study.top1_loss_interval(point["variant"], point["exits"], point["threshold"], "sample")
    where = f"exits {exits_label(point['exits'])}, threshold {point['threshold']:g}"
    label = f"per-sample exit: {point['variant']}, {where}"
    speed = speed_columns(comparison, "per_sample", len(images), exits_on_batch["batch_ideal_speedup"],
                          PER_SAMPLE_TARGET)  # fmt: skip
    rows.append({"measurement": label, **speed,
                 "target": f"speed-up >= 2.5 at test top-1 loss <= 0.5 points; measured / ideal in {PER_SAMPLE_TARGET}",
                 "test_top1": test["top1"], "test_top1_loss": loss, "test_top1_loss_low": low,
                 "test_top1_loss_high": high, "test_ideal_speedup": test["ideal_speedup"],
                 "test_exited_pct": test["exited_pct"], **exits_on_batch})  # fmt: skip
    speed = speed_columns(comparison, "idle", len(images), 1.0, (1 - bench.CONTROL_TOLERANCE, 1.0))
    rows.append({"measurement": "exit machinery, nothing exits (exits 3,6,9, threshold 1.0)", **speed,
                 "target": "overhead <= 3 % (speed-up >= 0.97)", "overhead_pct": 100 * (1 / speed["speedup"] - 1),
                 "overhead_pct_low": 100 * (1 / speed["speedup_high"] - 1),
                 "overhead_pct_high": 100 * (1 / speed["speedup_low"] - 1),
                 "batch_exited_pct": batch_exits(study, idle, len(images))["batch_exited_pct"]})  # fmt: skip
    rows.append({"measurement": CONTROL_LABEL, **control_columns(comparison, len(images)),
                 "target": f"1.00 ± {bench.CONTROL_TOLERANCE:.0%}"})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["plain_images_per_s"] = len(images) / comparison.speedup("plain")["seconds"]
    frame = frame.assign(batch_size=len(images), **protocol(comparison), note=table_note(comparison))
    return frame, comparison


# ----------------------------------------------------------------------------------------------------------
# Controls for the per-sample exit: does batch size or compaction alone move the per-image cost?


class FirstRows(torch.nn.Module):
    """``model`` on the first ``rows`` images of the batch (a view: no copy), to time smaller batches."""

    def __init__(self, model: torch.nn.Module, rows: int) -> None:
        super().__init__()
        self.model, self.rows = model, rows

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x[: self.rows])


class CompactionKeepsEveryRow(torch.nn.Module):
    """A multi-exit forward where no image leaves, yet every exit computes its head and confidence and compacts
    the batch with ``exits.compact`` keeping all rows (``torch.arange(B)``): the per-sample path's bookkeeping
    without its savings. Built from the model's own pieces."""

    def __init__(self, model: MultiExitViT) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        tokens = forward_start(m.vit, x)  # [B, N, D]
        rows = torch.arange(x.shape[0], device=x.device)
        done = 0
        for index, block in enumerate(m.exits):
            tokens = m.run_blocks(tokens, done, block)
            done = block
            confidence(m.exit_heads[index](m.exit_features(tokens)), m.confidence)
            tokens = compact(tokens, rows)  # [B, N, D] -> [B, N, D]: every row kept
        return m.final_logits(m.run_blocks(tokens, done, m.depth))


def control_batch_sizes(batch_size: int) -> tuple[int, ...]:
    """The issue's 256, 253, 220, 128 scaled to ``batch_size``: b, b - 3, round(0.86 b), b / 2 (distinct, >= 1)."""
    sizes = (batch_size, batch_size - 3, round(batch_size * 220 / 256), batch_size // 2)
    return tuple(dict.fromkeys(max(1, b) for b in sizes))


def per_sample_controls(
    study: ExitStudy,
    batch_size: int,
    settings: bench.CompareSettings,
    device: str = "cpu",
) -> tuple[pd.DataFrame, bench.Comparison]:
    """The per-sample exit's controls, timed in one comparison on real test images: the plain model's per-image
    time at smaller batches, the exit machinery with nothing exiting, and a compaction that keeps every row.

    ``per_image_speedup`` is (plain's time per image at the full batch) / (the arm's time per image), with its 95%
    interval: above 1 means that arm's images are cheaper one by one. A per-sample exit's measured speed-up beyond
    its FLOP ideal is only explained if a smaller batch alone is cheaper per image.
    """
    images = timing_batch(study, batch_size)
    full = len(images)
    sizes = control_batch_sizes(full)[1:]
    idle = MultiExitViT(study.vit, DEFAULT_EXITS, threshold=1.0, policy="sample").eval()
    models: dict[str, torch.nn.Module] = {"plain": study.vit}
    models.update({f"plain, batch {b}": FirstRows(study.vit, b) for b in sizes})
    models["exit machinery, nothing exits"] = idle
    models["compaction keeping every row"] = CompactionKeepsEveryRow(idle)
    comparison = time_models(models, images, settings, device)
    timed_rows = {f"plain, batch {b}": b for b in sizes}
    labels = {"plain": f"plain, batch {full}", CONTROL_ARM: CONTROL_LABEL}
    rows = []
    for name in [*models, CONTROL_ARM]:
        count = timed_rows.get(name, full)
        speed = comparison.speedup(name)
        per_image = count / full  # (t_full / full) / (t_arm / count) = speed-up * count / full
        rows.append({
            "arm": labels.get(name, name),
            "batch_size": count,
            "ms_per_image": 1e3 * speed["seconds"] / count,
            "per_image_speedup": speed["speedup"] * per_image,
            "per_image_speedup_low": speed["speedup_low"] * per_image,
            "per_image_speedup_high": speed["speedup_high"] * per_image,
        })  # fmt: skip
    frame = pd.DataFrame(rows).assign(**protocol(comparison), note=table_note(comparison))
    return frame, comparison
