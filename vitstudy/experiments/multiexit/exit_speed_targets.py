"""Notebook 02's speed targets on the baseline, and the controls that say what a per-sample speed-up is made of.

One comparison on one batch of real test images times forced exits against their FLOP ratio, the per-sample exit
at each operating point (each variant's, ``joint`` among them), the exit machinery when nothing leaves and the A/A
control (:func:`performance_table`, each per-sample row judged against the issue's target by :func:`target_verdict`);
another times the plain model on fewer images and the exit path with a compaction that keeps every row
(:func:`per_sample_controls`). Budgets are notebook 02's (:func:`.real_data_exit.budget`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from ... import bench
from ...formatting import NOT_MEASURED
from ...multiexit import DEFAULT_EXITS, ExitStudy, MultiExitViT, exits_label
from ..sentences import is_missing, measured, number, paragraph
from .max_speed_exit import CONTROL_LABEL, FORCED_TARGET
from .real_data_exit import PER_SAMPLE_TARGET, batch_exits, exit_row, timing_batch

NO_EFFECT = (1 - bench.CONTROL_TOLERANCE, 1 + bench.CONTROL_TOLERANCE)  # a control arm that changes nothing
TARGET_SPEEDUP = 2.5  # issue 18: measured throughput over the plain model at an operating point ...
TARGET_MAX_LOSS = 0.5  # ... losing at most this many points of test top-1
PER_SAMPLE = "per-sample exit"  # how the performance table's per-sample rows start


def idle_model(vit: torch.nn.Module, keep_every_row: bool = False) -> MultiExitViT:
    """The exit machinery at exits 3, 6, 9 with a threshold no image reaches (1.0); ``keep_every_row`` adds the
    per-sample compaction at every exit (``MultiExitViT.keep_every_row``)."""
    return MultiExitViT(vit, DEFAULT_EXITS, threshold=1.0, policy="sample", keep_every_row=keep_every_row).eval()


def target_verdict(row: dict[str, Any]) -> str:
    """A per-sample row against the issue's target: >= 2.5x measured at <= 0.5 points lost on test, measured
    within 0.90-1.03 of its FLOP ideal. "met" when the point estimates are and both intervals lie inside; "met at
    the point estimates" when only those are; else "not met" and why."""
    speedup, loss = row.get("speedup", math.nan), row.get("test_top1_loss", math.nan)
    if is_missing(speedup) or is_missing(loss):
        return NOT_MEASURED
    target = f">= {TARGET_SPEEDUP:g}x at <= {TARGET_MAX_LOSS:g} points lost"
    misses = [f"speed-up below {TARGET_SPEEDUP:g}x"] if speedup < TARGET_SPEEDUP else []
    misses += [f"loses more than {TARGET_MAX_LOSS:g} points"] if loss > TARGET_MAX_LOSS else []
    misses += [] if str(row.get("verdict", "")).startswith(bench.WITHIN_TARGET) else ["measured / ideal off target"]
    if misses:
        return f"not met ({target}): " + ", ".join(misses)
    if row["speedup_low"] >= TARGET_SPEEDUP and row["test_top1_loss_high"] <= TARGET_MAX_LOSS:
        return f"met ({target}), both intervals inside"
    return f"met at the point estimates ({target}); an interval crosses its bound"


def per_sample_label(point: dict[str, Any]) -> str:
    return f"{PER_SAMPLE}: {point['variant']}, exits {exits_label(point['exits'])}, threshold {point['threshold']:g}"


def performance_table(
    study: ExitStudy,
    points: Sequence[dict[str, Any]],
    batch_size: int,
    settings: bench.CompareSettings,
    device: str = "cpu",
) -> tuple[pd.DataFrame, bench.Comparison]:
    """The speed targets on the baseline, timed in one comparison: forced exits vs their FLOP ideal, the per-sample
    exit at each of ``points`` (its test top-1 loss with a 95% paired interval, its ``speed_target`` verdict), the
    exit machinery when nothing exits, and the A/A control."""
    images = timing_batch(study, batch_size)
    count = len(images)
    points = list({per_sample_label(p): p for p in points}.items())  # (arm name, point), each point once
    idle = idle_model(study.vit)
    models: dict[str, torch.nn.Module] = {"plain": study.vit, "idle": idle}
    models.update({name: study.configured(p["variant"], p["exits"], p["threshold"], "sample") for name, p in points})
    for block in DEFAULT_EXITS:
        models[f"forced_{block}"] = MultiExitViT(study.vit, DEFAULT_EXITS, forced_exit=block).eval()
    comparison = bench.compare_models(models, images, settings, device)
    rows = []
    for block in DEFAULT_EXITS:
        ideal = study.costs.plain() / study.costs.forced(block)
        rows.append(
            {
                "measurement": f"forced exit after block {block}",
                **bench.speed_row(comparison, f"forced_{block}", count, ideal, FORCED_TARGET),
                "target": f"measured / ideal in {FORCED_TARGET}",
            }
        )
    for name, point in points:
        setting = point["variant"], point["exits"], point["threshold"], "sample"
        test = study.evaluate(*setting)
        loss, low, high = study.top1_loss_interval(*setting)
        row = {
            "measurement": name,
            **exit_row(study, comparison, name, models[name], count, PER_SAMPLE_TARGET),
            "target": f"speed-up >= {TARGET_SPEEDUP:g} at test top-1 loss <= {TARGET_MAX_LOSS:g} points; "
            f"measured / ideal in {PER_SAMPLE_TARGET}",
            "variant": point["variant"],
            "test_top1": test["top1"],
            "test_top1_loss": loss,
            "test_top1_loss_low": low,
            "test_top1_loss_high": high,
            "test_ideal_speedup": test["ideal_speedup"],
            "test_exited_pct": test["exited_pct"],
        }
        rows.append({**row, "speed_target": target_verdict(row)})
    speed = bench.speed_row(comparison, "idle", count, 1.0, (NO_EFFECT[0], 1.0))
    rows.append(
        {
            "measurement": "exit machinery, nothing exits (exits 3,6,9, threshold 1.0)",
            **speed,
            "target": "overhead <= 3 % (speed-up >= 0.97)",
            "overhead_pct": 100 * (1 / speed["speedup"] - 1),
            "overhead_pct_low": 100 * (1 / speed["speedup_high"] - 1),
            "overhead_pct_high": 100 * (1 / speed["speedup_low"] - 1),
            "batch_exited_pct": batch_exits(study, idle, count)["batch_exited_pct"],
        }
    )
    rows.append(
        {
            "measurement": CONTROL_LABEL,
            **bench.control_row(comparison, count),
            "target": f"1.00 ± {bench.CONTROL_TOLERANCE:.0%}",
        }
    )
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
    # The plain model at the full batch on every row (a row's own batch would scale the baseline's rate with it)
    use = bench.machine_use(comparison, comparison.baseline, full, comparison.work)
    rows = []
    for name in [*models, comparison.control]:
        count = timed_rows.get(name, full)
        speed = bench.speed_row(comparison, name, count, full / count, NO_EFFECT)
        rows.append(
            {
                "arm": labels.get(name, name),
                "batch_size": count,
                "ms_per_image": 1e3 / speed["images_per_s"],
                "per_image_speedup": speed["measured_over_ideal"],
                "per_image_speedup_low": speed["measured_over_ideal_low"],
                "per_image_speedup_high": speed["measured_over_ideal_high"],
                "verdict": speed["verdict"],
                **use,
            }
        )
    frame = pd.DataFrame(rows).assign(**bench.protocol(comparison), note=bench.table_note(comparison))
    return frame, comparison


def _per_sample_sentence(row: dict[str, Any], lead: str) -> str:
    return (
        f"{lead} ({row['measurement']}) reads {measured(row)}, {number(row['measured_over_ideal'])} of its FLOP "
        f"ideal, losing {measured(row, name='test_top1_loss', unit=' points')} of test top-1: "
        f"{row['speed_target']}."
    )


def target_findings(performance: pd.DataFrame) -> list[str]:
    """Sentences on the issue's target from the performance table's per-sample rows: the ``joint`` rows, the best
    row of the heads on the frozen backbone, and which rows meet the target; if none does, the best measured
    accuracy-preserving point (test top-1 loss <= 0.5 points) and how far the FLOP ideal of the best
    accuracy-preserving operating point is from 2.5x."""
    rows = performance[performance["measurement"].str.startswith(PER_SAMPLE)]
    if rows.empty:
        return []
    sentences = [
        _per_sample_sentence(row, "The exits trained with the backbone")
        for row in rows[rows["variant"] == "joint"].to_dict("records")
    ]
    frozen = rows[rows["variant"] != "joint"]
    if len(frozen) and frozen["speedup"].notna().any():
        best = frozen.loc[frozen["speedup"].idxmax()].to_dict()
        sentences.append(_per_sample_sentence(best, "The fastest heads on the frozen backbone"))
    if rows["speedup"].isna().all():  # no device to time on: nothing to judge
        return [*sentences, f"Against the {TARGET_SPEEDUP:g}× target: {measured(rows.iloc[0].to_dict())}."]
    met = rows[rows["speed_target"].str.startswith("met")]
    if len(met):
        sentences.append(
            f"The target (>= {TARGET_SPEEDUP:g}× at <= {TARGET_MAX_LOSS:g} points lost on test) is met "
            f"by: {'; '.join(met['measurement'])}."
        )
        return sentences
    kept = rows[rows["test_top1_loss"] <= TARGET_MAX_LOSS]
    if kept.empty:
        sentences.append(
            f"No operating point keeps test top-1 within {TARGET_MAX_LOSS:g} points of the plain model, "
            f"so none can meet the {TARGET_SPEEDUP:g}× target."
        )
        return sentences
    sentences.append(
        f"No operating point meets the target (>= {TARGET_SPEEDUP:g}× at <= {TARGET_MAX_LOSS:g} points lost on test)."
    )
    if kept["speedup"].notna().any():
        fastest = kept.loc[kept["speedup"].idxmax()].to_dict()
        sentences.append(
            f"The best measured point that keeps accuracy is {fastest['measurement']}, at {measured(fastest)}."
        )
    ideal = kept.loc[kept["test_ideal_speedup"].idxmax()].to_dict()
    short = TARGET_SPEEDUP - ideal["test_ideal_speedup"]
    where = f"{number(short)}× short of" if short > 0 else f"{number(-short)}× above"
    tail = (
        "no implementation of these exits can reach the target there"
        if short > 0
        else "its FLOPs allow the target, so the shortfall is in the measured speed-up"
    )
    sentences.append(
        f"The FLOP ideal of the best accuracy-preserving operating point ({ideal['measurement']}) is "
        f"{number(ideal['test_ideal_speedup'], unit='×')} on the test set, {where} {TARGET_SPEEDUP:g}×: "
        f"{tail}."
    )
    return sentences


def findings(table52: pd.DataFrame, performance: pd.DataFrame) -> str:
    """What notebook 02 shows, in sentences computed from its Table 5.2 (beside the report's) and its speed
    targets table (Markdown): the report's real-data speed-ups, ours under the batch rule, and the per-sample exit
    at each variant's validation-chosen operating point against the issue's target (:func:`target_findings`)."""
    paper = table52["paper_speedup"].dropna() if "paper_speedup" in table52 else pd.Series(dtype=float)
    batch = table52[(table52["policy"] == "batch") & table52["speedup"].notna()]
    control = performance[performance["measurement"] == CONTROL_LABEL]
    sentences = ["Does an early exit speed up inference on real data, where the report saw none?"]
    if len(paper):
        sentences.append(
            f"The report's real-data speed-ups span {number(paper.min(), unit='×')}–"
            f"{number(paper.max(), unit='×')} with its batch rule."
        )
    if len(batch):
        best = batch.loc[batch["speedup"].idxmax()].to_dict()
        sentences.append(
            f"Under that rule our best setting ({best['setting']}) reads {measured(best)}, "
            f"with {number(best.get('batch_exited_pct'), digits=1, unit='%')} of the timed batch "
            "exiting early."
        )
    columns = {"exits", "variant", "top1"} <= set(table52.columns)
    sample = table52[table52["policy"] == "sample"]
    by_exit = sample.pivot_table(index="exits", columns="variant", values="top1") if columns else pd.DataFrame()
    if "joint" in by_exit and len(by_exit.columns) > 1:
        gains = (by_exit["joint"] - by_exit.drop(columns="joint").max(axis=1)).dropna()
        if len(gains):
            sentences.append(
                f"At threshold {number(table52['threshold'].iloc[0], digits=3)}, training the exits with "
                f"the backbone changes test top-1 by {number(gains.min(), unit=' points')} to "
                f"{number(gains.max(), unit=' points')} against the best frozen-backbone variant at the "
                "same exit (per-sample policy)."
            )
    sentences.append("Each image leaving on its own, at each variant's operating point chosen on validation:")
    sentences += target_findings(performance)
    if len(control):
        sentences.append(f"The A/A control reads {measured(control.iloc[0].to_dict())}: {control['verdict'].iloc[0]}.")
    sentences.append(
        "The batch rule waits for the least confident image of the batch; letting each image leave on "
        "its own is what turns exits into speed."
    )
    return paragraph(sentences)
