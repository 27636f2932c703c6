"""Notebook 02: early exit on real data, the report's Table 5.2, and what a per-sample exit buys.

Accuracy and exit shares come offline from a :class:`~vitstudy.multiexit.ExitStudy` (features recorded once);
speed-ups from one batch of real test images, every timed setting against the plain model in one
``bench.compare_models`` comparison with its A/A control, each row built by ``bench.speed_row``. Table 5.2 itself,
the budget, the ``joint`` variant's training and the operating point are shared with notebooks 03, 07 and 10
(:mod:`.common`). Here:

- the accuracy / speed-up trade-off: the threshold sweep's curves and a few points timed on real test images
  (:func:`measured_points`, :func:`accuracy_speed_curves`);
- why the report's batch rule never fired, offline (:func:`batch_rule_exit_rates`, :func:`chance_floor_table`,
  :func:`required_confident_share`): the max-softmax of C classes is never below 1/C, and if a share p of images
  is confident on its own, a batch of b independent images leaves with probability p^b;
- the speed targets on the baseline, in one comparison (:func:`performance_table`, each per-sample row judged
  against the study's target by :func:`target_verdict`), and the controls that say what a per-sample speed-up is
  made of (:func:`per_sample_controls`);
- :func:`findings`, what the notebook shows in sentences.

Every function compares the variants the study holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from ... import bench
from ...formatting import NOT_MEASURED
from ...multiexit import DEFAULT_EXITS, EXIT_SETS, ExitStudy, MultiExitViT, exits_label
from ...plots import new_figure
from ..sentences import is_missing, judged, measured, number, paragraph, points
from .common import (
    CONTROL_LABEL,
    FORCED_TARGET,
    SWEEP_THRESHOLDS,
    VARIANT_LABELS,
    batch_exits,
    choose_operating_point,
    exit_row,
    timing_batch,
)

# The study's speed target: measured throughput over the plain model at an operating point ...
TARGET_SPEEDUP = 2.5
TARGET_MAX_LOSS = 0.5  # ... losing at most this many points of test top-1
PER_SAMPLE = "per-sample exit"  # how the performance table's per-sample rows start


# Table 5.2 as saved by notebook 02: ours, then the report's top-1 and speed-up, then how it was measured.
TABLE_5_2_COLUMNS = (
    "setting",
    "variant",
    "exits",
    "policy",
    "threshold",
    "top1",
    "top1_loss",
    "variant_final_top1",
    "exited_pct",
    "speedup",
    "speedup_low",
    "speedup_high",
    "ideal_speedup",
    "batch_ideal_speedup",
    "measured_over_ideal",
    "verdict",
    "batch_exited_pct",
    "timed_as",
    "paper_top1",
    "paper_speedup",
    *bench.MACHINE_USE_COLUMNS,
    "device",
    "threads",
    "rounds",
    "note",
)


# ----------------------------------------------------------------------------------------------------------
# The accuracy / speed-up trade-off


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
    for i, p in enumerate(points):
        models[str(i)] = study.configured(p["variant"], p["exits"], p["threshold"], "sample")
    comparison = bench.compare_models(models, images, settings, device)
    rows = []
    for i, p in enumerate(points):
        row = study.evaluate(p["variant"], p["exits"], p["threshold"], "sample")
        speed = exit_row(study, comparison, str(i), models[str(i)], len(images), bench.FLOP_IDEAL_TARGET)
        rows.append({**row, **speed, "ideal_speedup": row["ideal_speedup"]})
    rows.append({"variant": CONTROL_LABEL, **bench.control_row(comparison, len(images))})
    frame = pd.DataFrame(rows).assign(
        timed_batch_size=len(images), **bench.protocol(comparison), note=bench.table_note(comparison)
    )
    return frame, comparison


def operating_points(
    study: ExitStudy,
    max_loss: float = 0.5,
    thresholds: Sequence[float] = SWEEP_THRESHOLDS,
    variants: Sequence[str] | None = None,
    exit_sets: Sequence[tuple[int, ...]] = EXIT_SETS,
) -> list[dict[str, Any]]:
    """Each variant's own operating point by :func:`choose_operating_point`'s rule (on validation), so every
    variant, the heads on the frozen backbone and ``joint`` alike, is timed at its best allowed setting."""
    return [choose_operating_point(study, max_loss, thresholds, [v], exit_sets) for v in variants or study.variants]


def sweep_points(point: dict[str, Any], variants: Sequence[str] = ("separate",)) -> list[dict[str, Any]]:
    """The points notebook 02 times on its curves: the operating point, a stricter threshold (+0.2) and each of
    ``variants`` (our heads) at every exit with threshold 0.99."""
    stricter = {**point, "threshold": min(1.0, round(point["threshold"] + 0.2, 3))}
    return [point, stricter, *({"variant": v, "exits": DEFAULT_EXITS, "threshold": 0.99} for v in variants)]


def accuracy_speed_curves(
    sweep: pd.DataFrame, measured: pd.DataFrame | None = None, plain_top1: float | None = None
) -> Figure:
    """Top-1 vs FLOP-ideal speed-up per variant (one panel each), a line per exit set; measured points on top."""
    variants = list(dict.fromkeys(sweep["variant"]))
    fig = new_figure((3.2 * len(variants), 3.4))
    axes = fig.subplots(1, len(variants), sharey=True, squeeze=False)[0]
    for ax, variant in zip(axes, variants):
        part = sweep[sweep["variant"] == variant]
        for exits, curve in part.groupby("exits", sort=False):
            curve = curve.sort_values("ideal_speedup")
            ax.plot(curve["ideal_speedup"], curve["top1"], "-o", ms=3, label=f"exits {exits}")
        if measured is not None:
            points = measured[measured["variant"] == variant]  # the A/A control row matches no variant
            ax.scatter(points["speedup"], points["top1"], marker="*", s=90, color="black", zorder=5, label="measured")
        if plain_top1 is not None:
            ax.axhline(plain_top1, color="grey", ls="--", lw=1)
            ax.axhline(plain_top1 - 0.5, color="grey", ls=":", lw=1)
        ax.set(title=VARIANT_LABELS.get(variant, variant), xlabel="speed-up (x; lines: FLOP-ideal)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test top-1 (%)")
    axes[0].legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------------------------------------
# Why the report's batch rule never fired (offline: nothing here is timed)


def batch_rule_exit_rates(
    study: ExitStudy,
    variant: str,
    exits: tuple[int, ...],
    thresholds: Sequence[float],
    batch_sizes: Sequence[int],
) -> pd.DataFrame:
    """Share of images leaving early under the ``batch`` rule, by batch size and threshold (measured offline).

    ``per_image_pct`` is the share that would leave on their own (batch size 1); ``independent_pct`` is what
    the batch rule gives if confident images were independent draws: ``per_image ** batch_size``.
    """
    rows = []
    for threshold in thresholds:
        per_image = study.evaluate(variant, exits, threshold, "sample")["exited_pct"] / 100
        for batch_size in batch_sizes:
            row = study.evaluate(variant, exits, threshold, "batch", batch_size)
            rows.append(
                {
                    "variant": variant,
                    "exits": exits_label(exits),
                    "threshold": threshold,
                    "batch_size": batch_size,
                    "batch_exited_pct": row["exited_pct"],
                    "per_image_pct": 100 * per_image,
                    "independent_pct": 100 * per_image**batch_size,
                    "top1": row["top1"],
                    "ideal_speedup": row["ideal_speedup"],
                }
            )
    return pd.DataFrame(rows)


def required_confident_share(batch_sizes: Sequence[int], batch_exit_rate: float = 0.5) -> pd.DataFrame:
    """Confident share per image needed for a batch of b independent images to leave at rate r: ``r ** (1/b)``."""
    return pd.DataFrame(
        [
            {
                "batch_size": b,
                "batch_exit_rate_pct": 100 * batch_exit_rate,
                "confident_share_needed_pct": 100 * batch_exit_rate ** (1 / b),
                "unconfident_images_allowed_per_1000": 1000 * (1 - batch_exit_rate ** (1 / b)),
            }
            for b in batch_sizes
        ]
    )


def chance_floor_table(classes: Sequence[int] = (10, 1000), threshold: float = 0.01) -> pd.DataFrame:
    """Max-softmax is at least 1/C: where the report's threshold sits relative to chance for C classes."""
    return pd.DataFrame(
        [
            {
                "classes": c,
                "max_softmax_floor": 1 / c,
                "threshold": threshold,
                "threshold_over_floor": threshold * c,
                "exit_guaranteed_per_image": threshold <= 1 / c,
            }
            for c in classes
        ]
    )


def batch_rule_plot(rates: pd.DataFrame) -> Figure:
    """Exit rate of the ``batch`` rule vs batch size, one line per threshold, with the independence model dashed."""
    fig = new_figure((6, 3.4))
    ax = fig.subplots()
    for threshold, part in rates.groupby("threshold"):
        line = ax.plot(part["batch_size"], part["batch_exited_pct"], "-o", ms=3, label=f"threshold {threshold:g}")
        ax.plot(part["batch_size"], part["independent_pct"], "--", color=line[0].get_color(), lw=1)
    ax.set_xscale("log", base=2)
    ax.set(
        xlabel="batch size",
        ylabel="images that exited early (%)",
        title="the report's rule: a batch exits only when its least confident image does",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


# ----------------------------------------------------------------------------------------------------------
# The speed targets on the baseline, and the per-sample controls


def idle_model(vit: torch.nn.Module, keep_every_row: bool = False) -> MultiExitViT:
    """The exit machinery at exits 3, 6, 9 with a threshold no image reaches (1.0); ``keep_every_row`` adds the
    per-sample compaction at every exit (``MultiExitViT.keep_every_row``)."""
    return MultiExitViT(vit, DEFAULT_EXITS, threshold=1.0, policy="sample", keep_every_row=keep_every_row).eval()


def target_verdict(row: dict[str, Any]) -> str:
    """A per-sample row against the study's target: >= 2.5x measured at <= 0.5 points lost on test, measured
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
            **exit_row(study, comparison, name, models[name], count, bench.FLOP_IDEAL_TARGET),
            "target": f"speed-up >= {TARGET_SPEEDUP:g} at test top-1 loss <= {TARGET_MAX_LOSS:g} points; "
            f"measured / ideal in {bench.FLOP_IDEAL_TARGET}",
            "variant": point["variant"],
            "test_top1": test["top1"],
            "test_top1_loss": loss,
            "test_top1_loss_low": low,
            "test_top1_loss_high": high,
            "test_ideal_speedup": test["ideal_speedup"],
            "test_exited_pct": test["exited_pct"],
        }
        rows.append({**row, "speed_target": target_verdict(row)})
    speed = bench.speed_row(comparison, "idle", count, 1.0, bench.IDLE_TARGET)
    rows.append(
        {
            "measurement": "exit machinery, nothing exits (exits 3,6,9, threshold 1.0)",
            **speed,
            "target": f"overhead <= {100 * bench.CONTROL_TOLERANCE:g} % (speed-up >= {bench.IDLE_TARGET[0]:g})",
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
    """The per-sample controls' batch sizes (256, 253, 220 and 128 at a batch of 256) scaled to
    ``batch_size``: b, b - 3, round(0.86 b), b / 2 (distinct, >= 1)."""
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
        speed = bench.speed_row(comparison, name, count, full / count, bench.CONTROL_BAND)
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


def _point(measurement: str) -> str:
    """An operating point's name without the performance table's "per-sample exit: " lead."""
    return str(measurement).removeprefix(f"{PER_SAMPLE}: ")


def _per_sample_sentence(row: dict[str, Any], lead: str, trust: str) -> str:
    """One operating point: its speed-up against its ideal, its top-1 change, and (under a passing control) its
    verdict on the target; a failed control is said once, after every point."""
    loss, low, high = (row.get(f"test_top1_loss{end}", math.nan) for end in ("", "_low", "_high"))
    speed = bench.speed_phrase(
        row["speedup"], row["speedup_low"], row["speedup_high"], row.get("ideal_speedup", math.nan)
    )
    verdict = "" if trust else f": {judged(row['speed_target'], trust)}"
    return f"{lead} ({_point(row['measurement'])}): {speed}, and top-1 {points(-loss, -high, -low)}{verdict}."


TARGET = f"≥ {TARGET_SPEEDUP:g}× at ≤ {TARGET_MAX_LOSS:g} points lost on test"


def target_findings(performance: pd.DataFrame, trust: str = "") -> list[str]:
    """Sentences on the study's target from the performance table's per-sample rows: the ``joint`` rows, the
    fastest heads on the frozen backbone, and which rows meet the target; if none does, the best measured
    accuracy-preserving point and how far its FLOP ideal is from 2.5×. ``trust``
    (:func:`vitstudy.bench.table_trust`): under a failed A/A control no point is called met."""
    rows = performance[performance["measurement"].str.startswith(PER_SAMPLE)]
    if rows.empty:
        return []
    if rows["speedup"].isna().all():  # no device to time on: nothing to judge
        return [f"Against the {TARGET_SPEEDUP:g}× target: {measured(rows.iloc[0].to_dict())}."]
    sentences = [
        _per_sample_sentence(row, "The exits trained with the backbone", trust)
        for row in rows[rows["variant"] == "joint"].to_dict("records")
    ]
    frozen = rows[(rows["variant"] != "joint") & rows["speedup"].notna()]
    if len(frozen):
        fastest = frozen.loc[frozen["speedup"].idxmax()].to_dict()
        sentences.append(_per_sample_sentence(fastest, "The fastest heads on the frozen backbone", trust))
    if trust:
        return [*sentences, f"Whether any point meets the target ({TARGET}) is {trust}."]
    met = rows[rows["speed_target"].str.startswith("met")]
    if len(met):
        return [*sentences, f"The target ({TARGET}) is met by: {'; '.join(met['measurement'].map(_point))}."]
    kept = rows[rows["test_top1_loss"] <= TARGET_MAX_LOSS]
    if kept.empty:
        return [
            *sentences,
            f"No operating point keeps test top-1 within {TARGET_MAX_LOSS:g} points: none meets the target.",
        ]
    ideal = kept.loc[kept["test_ideal_speedup"].idxmax()].to_dict()
    short = TARGET_SPEEDUP - ideal["test_ideal_speedup"]
    reach = (
        f"{number(short)}× short of {TARGET_SPEEDUP:g}×, so no implementation of these exits reaches the target there"
        if short > 0
        else "enough for the target: the shortfall is in the measured speed-up"
    )
    return [
        *sentences,
        f"No operating point meets the target ({TARGET}); the best accuracy-keeping one, "
        f"{_point(ideal['measurement'])}, has a FLOP ideal of {number(ideal['test_ideal_speedup'], unit='×')} on "
        f"test, {reach}.",
    ]


def findings(table52: pd.DataFrame, performance: pd.DataFrame) -> str:
    """What notebook 02 shows, in a few sentences computed from its Table 5.2 (beside the report's) and its speed
    targets table (Markdown): the batch rule against the report's, what training the exits with the backbone buys,
    and the per-sample exit at each variant's validation-chosen operating point against the study's target
    (:func:`target_findings`), judged only under a passing A/A control."""
    paper = table52["paper_speedup"].dropna() if "paper_speedup" in table52 else pd.Series(dtype=float)
    batch = table52[(table52["policy"] == "batch") & table52["speedup"].notna()]
    trust = bench.table_trust(performance)
    sentences = ["Does an early exit speed up inference on real data, where the report saw none?"]
    if len(batch):
        best = batch.loc[batch["speedup"].idxmax()].to_dict()
        report_range = (
            f"{number(paper.min(), unit='×')}–{number(paper.max(), unit='×')}"
            if len(paper) and paper.min() != paper.max()
            else (f"all {number(paper.min(), unit='×')}" if len(paper) else NOT_MEASURED)
        )
        sentences.append(
            f"Under the report's batch rule (its speed-ups: {report_range}) our best setting, {best['setting']}, "
            f"reads {measured(best)}, with {number(best.get('batch_exited_pct'), digits=1, unit=' %')} of the timed "
            "batch leaving early: the rule buys nothing here either."
        )
    columns = {"exits", "variant", "top1"} <= set(table52.columns)
    sample = table52[table52["policy"] == "sample"]
    by_exit = sample.pivot_table(index="exits", columns="variant", values="top1") if columns else pd.DataFrame()
    if "joint" in by_exit and len(by_exit.columns) > 1:
        gains = (by_exit["joint"] - by_exit.drop(columns="joint").max(axis=1)).dropna()
        if len(gains):
            sentences.append(
                f"Training the exits with the backbone {_point_range(gains.min(), gains.max())} against the "
                f"best frozen-backbone heads at the same exits (threshold {number(table52['threshold'].iloc[0], 3)})."
            )
    sentences += target_findings(performance, trust)
    sentences.append("Caveat: one model and one training run per variant, at the scale printed at the top.")
    return paragraph(sentences)


def _point_range(low: float, high: float) -> str:
    """A range of top-1 changes as a verb: "gains 1.34–1.38 points of test top-1", "loses 0.20–0.40 points of test
    top-1", or "changes test top-1 by -0.20 to +0.30 points" when the sign differs."""
    if low > 0 or high < 0:
        verb, (a, b) = ("gains", (low, high)) if low > 0 else ("loses", sorted((-high, -low)))
        return f"{verb} {a:.2f} points of test top-1" if a == b else f"{verb} {a:.2f}–{b:.2f} points of test top-1"
    return f"changes test top-1 by {low:+.2f} to {high:+.2f} points"
