"""Does timing each arm in its own process bring the ViT-S/16 A/A control inside 1.00 ± 3%, and does one worker
process per arm (the report's ``isolation="process"``) keep it there as well as a fresh process per round and arm?

A hand-run measurement, not a test (a timing is no pass/fail on a shared CPU): run it on a QUIET machine (nothing
else running) with ``python -m vitstudy measure isolation``; it times for several minutes.

Notebook 04's quick budget (ViT-S/16 at 224, batch 16, 4 rounds of >= 0.5 s per arm) times three arms — the
baseline, its A/A copy and the headline row 6 / 55% / skip 11 — in one process, in one long-lived worker process
per arm, and with every (round, arm) in its own fresh process, :data:`REPEATS` times with the order of the
isolations reversed every other repeat.
:func:`measure` writes ``figures/tables/04_aa_isolation_vit_small.{csv,md}`` (one row per comparison: the A/A
reading and the headline's measured ÷ FLOP-ideal with their intervals, the wall time it cost, the load average when
it started) and the raw per-block times to ``figures/tables/raw/04_aa_isolation_vit_small.csv``. The budgets'
``isolation`` follows from this table.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from .. import bench
from ..experiments.skipvit import layers_ratios
from ..experiments.skipvit.common import CONTROL, timing_runs
from ..files import project_root
from ..report import save_raw, save_table
from ..skipvit import HEADLINE, TABLE1

REPEATS = 2
ISOLATIONS = ("in_process", "process", "process_per_round")
TABLE = "04_aa_isolation_vit_small"


def isolation_row(table: pd.DataFrame) -> dict[str, Any]:
    """One comparison of a :func:`~vitstudy.experiments.skipvit.common.timing_runs` table (baseline, headline, A/A
    copy) as one row: the A/A reading and the headline's speed-up and measured ÷ ideal, with intervals and verdict."""
    by_row = table.set_index("row")
    control, headline = by_row.loc[CONTROL], by_row.loc[HEADLINE]
    return {
        "aa_speedup": control["speedup"],
        "aa_low": control["speedup_low"],
        "aa_high": control["speedup_high"],
        "aa_within_3pct": bench.control_passes(control["speedup_low"], control["speedup_high"]),
        "headline_speedup": headline["speedup"],
        "headline_low": headline["speedup_low"],
        "headline_high": headline["speedup_high"],
        "headline_ideal": headline["ideal_speedup"],
        "headline_over_ideal": headline["measured_over_ideal"],
        "headline_verdict": headline["verdict"],
        "baseline_step_s": by_row.loc["baseline", "seconds_per_call"],
    }


def compare_isolations(
    model_name: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    timing: bench.CompareSettings,
    repeats: int = REPEATS,
    log: Callable[[str], None] = print,
    **model_kwargs: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The headline row timed ``repeats`` times in each isolation, alternating which goes first; returns (one
    :func:`isolation_row` per comparison with its wall time, load and protocol, the raw per-block times)."""
    threads = torch.get_num_threads()
    rows, raws = [], []
    for repeat in range(repeats):
        for isolation in ISOLATIONS if repeat % 2 == 0 else ISOLATIONS[::-1]:
            settings = dataclasses.replace(timing, isolation=isolation, threads=threads)
            load = os.getloadavg()[0]
            started = time.perf_counter()
            table, raw = timing_runs(
                model_name, input_size, num_classes, batch_size, settings, {HEADLINE: TABLE1[HEADLINE]}, **model_kwargs
            )
            wall = time.perf_counter() - started
            row = isolation_row(table)
            first = table.iloc[0]
            rows.append(
                {
                    "repeat": repeat,
                    "isolation": isolation,
                    **row,
                    "wall_s": wall,
                    "load_average_at_start": round(load, 2),
                    "rounds": first["rounds"],  # the rounds used: timing stops once the intervals are known
                    "min_run_time_s": settings.min_run_time,
                    "threads": threads,
                    "device": first["device"],
                    "torch": first["torch"],
                }
            )
            raws.append(raw.assign(repeat=repeat, isolation=isolation))
            log(
                f"repeat {repeat} {isolation:>10}: A/A {row['aa_speedup']:.3f} ({row['aa_low']:.3f}-"
                f"{row['aa_high']:.3f}), headline/ideal {row['headline_over_ideal']:.3f}, {wall:.0f} s, "
                f"load {load:.2f}"
            )
    return pd.DataFrame(rows), pd.concat(raws, ignore_index=True)


def measure() -> None:
    """Time notebook 04's quick ViT-S/16 comparison in both isolations and write the committed tables."""
    budget = layers_ratios.budget("quick")
    table, raw = compare_isolations(
        layers_ratios.VIT_SMALL,
        (3, 224, 224),
        10,
        budget.vit_small_batch,
        budget.timing,
        log=lambda line: print(line, flush=True),
    )
    out = project_root() / "figures"
    save_table(table, TABLE, out=out, floatfmt=".3f")
    save_raw(raw, TABLE, out=out)
