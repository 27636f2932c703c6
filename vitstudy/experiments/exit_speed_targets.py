"""Notebook 02's speed targets on the baseline, and the controls that say what a per-sample speed-up is made of.

One comparison on one batch of real test images times forced exits against their FLOP ratio, the per-sample exit
at the operating point, the exit machinery when nothing leaves and the A/A control (:func:`performance_table`);
another times the plain model on fewer images and the exit path with a compaction that keeps every row
(:func:`per_sample_controls`). Budgets are notebook 02's (:func:`.real_data_exit.budget`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from .. import bench
from ..multiexit import DEFAULT_EXITS, ExitStudy, MultiExitViT, exits_label
from .max_speed_exit import CONTROL_LABEL, FORCED_TARGET
from .real_data_exit import PER_SAMPLE_TARGET, batch_exits, exit_row, timing_batch
from .sentences import measured, number, paragraph

NO_EFFECT = (1 - bench.CONTROL_TOLERANCE, 1 + bench.CONTROL_TOLERANCE)  # a control arm that changes nothing


def idle_model(vit: torch.nn.Module, keep_every_row: bool = False) -> MultiExitViT:
    """The exit machinery at exits 3, 6, 9 with a threshold no image reaches (1.0); ``keep_every_row`` adds the
    per-sample compaction at every exit (``MultiExitViT.keep_every_row``)."""
    return MultiExitViT(vit, DEFAULT_EXITS, threshold=1.0, policy="sample", keep_every_row=keep_every_row).eval()


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
    count = len(images)
    variant, exits, threshold = point["variant"], point["exits"], point["threshold"]
    per_sample = study.configured(variant, exits, threshold, "sample")
    idle = idle_model(study.vit)
    models: dict[str, torch.nn.Module] = {"plain": study.vit, "per_sample": per_sample, "idle": idle}
    for block in DEFAULT_EXITS:
        models[f"forced_{block}"] = MultiExitViT(study.vit, DEFAULT_EXITS, forced_exit=block).eval()
    comparison = bench.compare_models(models, images, settings, device)
    rows = []
    for block in DEFAULT_EXITS:
        ideal = study.costs.plain() / study.costs.forced(block)
        rows.append({"measurement": f"forced exit after block {block}",
                     **bench.speed_row(comparison, f"forced_{block}", count, ideal, FORCED_TARGET),
                     "target": f"measured / ideal in {FORCED_TARGET}"})  # fmt: skip
    test = study.evaluate(variant, exits, threshold, "sample")
    loss, low, high = study.top1_loss_interval(variant, exits, threshold, "sample")
    rows.append({"measurement": f"per-sample exit: {variant}, exits {exits_label(exits)}, threshold {threshold:g}",
                 **exit_row(study, comparison, "per_sample", per_sample, count, PER_SAMPLE_TARGET),
                 "target": f"speed-up >= 2.5 at test top-1 loss <= 0.5 points; measured / ideal in {PER_SAMPLE_TARGET}",
                 "test_top1": test["top1"], "test_top1_loss": loss, "test_top1_loss_low": low,
                 "test_top1_loss_high": high, "test_ideal_speedup": test["ideal_speedup"],
                 "test_exited_pct": test["exited_pct"]})  # fmt: skip
    speed = bench.speed_row(comparison, "idle", count, 1.0, (NO_EFFECT[0], 1.0))
    rows.append({"measurement": "exit machinery, nothing exits (exits 3,6,9, threshold 1.0)", **speed,
                 "target": "overhead <= 3 % (speed-up >= 0.97)", "overhead_pct": 100 * (1 / speed["speedup"] - 1),
                 "overhead_pct_low": 100 * (1 / speed["speedup_high"] - 1),
                 "overhead_pct_high": 100 * (1 / speed["speedup_low"] - 1),
                 "batch_exited_pct": batch_exits(study, idle, count)["batch_exited_pct"]})  # fmt: skip
    rows.append({"measurement": CONTROL_LABEL, **bench.control_row(comparison, count),
                 "target": f"1.00 ± {bench.CONTROL_TOLERANCE:.0%}"})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["plain_images_per_s"] = count / comparison.speedup("plain")["seconds"]
    frame = frame.assign(batch_size=count, **bench.protocol(comparison), note=bench.table_note(comparison))
    return frame, comparison


class FirstRows(torch.nn.Module):
    """``model`` on the first ``rows`` images of the batch (a view: no copy), to time smaller batches."""

    def __init__(self, model: torch.nn.Module, rows: int) -> None:
        super().__init__()
        self.model, self.rows = model, rows

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x[: self.rows])


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
    interval: the arm's measured ÷ FLOP-ideal speed-up, the ideal of a call on b of B images being B / b. Above 1,
    that arm's images are cheaper one by one; a per-sample exit's measured speed-up beyond its FLOP ideal is only
    explained if a smaller batch alone is cheaper per image.
    """
    images = timing_batch(study, batch_size)
    full = len(images)
    sizes = control_batch_sizes(full)[1:]
    models: dict[str, torch.nn.Module] = {"plain": study.vit}
    models.update({f"plain, batch {b}": FirstRows(study.vit, b) for b in sizes})
    models["exit machinery, nothing exits"] = idle_model(study.vit)
    models["compaction keeping every row"] = idle_model(study.vit, keep_every_row=True)
    comparison = bench.compare_models(models, images, settings, device)
    timed_rows = {f"plain, batch {b}": b for b in sizes}
    labels = {"plain": f"plain, batch {full}", comparison.control: CONTROL_LABEL}
    rows = []
    for name in [*models, comparison.control]:
        count = timed_rows.get(name, full)
        speed = bench.speed_row(comparison, name, count, full / count, NO_EFFECT)
        rows.append({
            "arm": labels.get(name, name),
            "batch_size": count,
            "ms_per_image": 1e3 / speed["images_per_s"],
            "per_image_speedup": speed["measured_over_ideal"],
            "per_image_speedup_low": speed["measured_over_ideal_low"],
            "per_image_speedup_high": speed["measured_over_ideal_high"],
            "verdict": speed["verdict"],
        })  # fmt: skip
    frame = pd.DataFrame(rows).assign(**bench.protocol(comparison), note=bench.table_note(comparison))
    return frame, comparison


def findings(table52: pd.DataFrame, performance: pd.DataFrame) -> str:
    """What notebook 02 shows, in sentences computed from its Table 5.2 (beside the report's) and its speed
    targets table (Markdown): the report's real-data speed-ups, ours under the batch rule, and the per-sample exit
    at the validation-chosen operating point with its verdict."""
    paper = table52["paper_speedup"].dropna() if "paper_speedup" in table52 else pd.Series(dtype=float)
    batch = table52[(table52["policy"] == "batch") & table52["speedup"].notna()]
    per_sample = performance[performance["measurement"].str.startswith("per-sample exit")]
    control = performance[performance["measurement"] == CONTROL_LABEL]
    sentences = ["Does an early exit speed up inference on real data, where the report saw none?"]
    if len(paper):
        sentences.append(f"The report's real-data speed-ups span {number(paper.min(), unit='×')}–"
                         f"{number(paper.max(), unit='×')} with its batch rule.")  # fmt: skip
    if len(batch):
        best = batch.loc[batch["speedup"].idxmax()].to_dict()
        sentences.append(f"Under that rule our best setting ({best['setting']}) reads {measured(best)}, "
                         f"with {number(best.get('batch_exited_pct'), digits=1, unit='%')} of the timed batch "
                         "exiting early.")  # fmt: skip
    if len(per_sample):
        row = per_sample.iloc[0].to_dict()
        sentences.append(
            f"Each image leaving on its own ({row['measurement']}) reads {measured(row)}, losing "
            f"{measured(row, name='test_top1_loss', unit=' points')} of test top-1: {row['verdict']}."
        )
    if len(control):
        sentences.append(f"The A/A control reads {measured(control.iloc[0].to_dict())}: {control['verdict'].iloc[0]}.")
    sentences.append("The batch rule waits for the least confident image of the batch; letting each image leave on "
                     "its own is what turns exits into speed.")  # fmt: skip
    return paragraph(sentences)
