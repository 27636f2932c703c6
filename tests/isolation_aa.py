"""Does timing each arm in its own process bring the ViT-S/16 A/A control inside 1.00 ± 3%? (issue 8)

Not a test (a timing is no pass/fail on a shared CPU): run it by hand on a QUIET machine (nothing else running):

    .venv/bin/python tests/isolation_aa.py

Notebook 04's quick budget (ViT-S/16 at 224, batch 16, 4 rounds of >= 0.5 s per arm) times three arms — the
baseline, its A/A copy and the headline row 6 / 55% / skip 11 — once in one process and once with every
(round, arm) in its own process, ``REPEATS`` times with the two isolations alternating which goes first. Writes
``figures/tables/04_aa_isolation_vit_small.{csv,md}`` (one row per comparison: the A/A reading and the headline's
measured ÷ FLOP-ideal with their intervals, the wall time it cost, the load average when it started) and the raw
per-block times to ``figures/tables/raw/04_aa_isolation_vit_small.csv``. The budgets' ``isolation`` follows from this
table.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 2


def main() -> None:
    import pandas as pd
    import torch

    from vitstudy.report import save_raw, save_table
    from vitstudy.skipvit import TABLE1, table1_budget
    from vitstudy.skipvit.timing import CONTROL, HEADLINE, timing_runs

    budget = table1_budget("quick")
    threads = torch.get_num_threads()
    rows, raws = [], []
    for repeat in range(REPEATS):
        order = ("in_process", "process") if repeat % 2 == 0 else ("process", "in_process")
        for isolation in order:
            timing = dataclasses.replace(budget.timing, isolation=isolation, threads=threads)
            load = os.getloadavg()[0]
            started = time.perf_counter()
            rows_timed = {HEADLINE: TABLE1[HEADLINE]}
            table, raw = timing_runs("vit_small_patch16_224", (3, 224, 224), 10, budget.paper_batch,
                                     dataclasses.replace(budget, timing=timing), rows=rows_timed)  # fmt: skip
            wall = time.perf_counter() - started
            by_row = table.set_index("row")
            control, headline = by_row.loc[CONTROL], by_row.loc[HEADLINE]
            rows.append({
                "repeat": repeat,
                "isolation": isolation,
                "aa_speedup": control["speedup"],
                "aa_low": control["speedup_low"],
                "aa_high": control["speedup_high"],
                "aa_within_3pct": abs(control["speedup"] - 1) <= 0.03,
                "headline_speedup": headline["speedup"],
                "headline_low": headline["speedup_low"],
                "headline_high": headline["speedup_high"],
                "headline_ideal": headline["ideal_speedup"],
                "headline_over_ideal": headline["measured_over_ideal"],
                "headline_verdict": headline["verdict"],
                "baseline_step_s": by_row.loc["baseline", "step_seconds"],
                "wall_s": wall,
                "load_average_at_start": round(load, 2),
                "rounds": timing.rounds,
                "min_run_time_s": timing.min_run_time,
                "threads": threads,
                "device": headline["device"],
                "torch": headline["torch"],
            })  # fmt: skip
            raws.append(raw.assign(repeat=repeat, isolation=isolation))
            print(f"repeat {repeat} {isolation:>10}: A/A {control['speedup']:.3f} "
                  f"({control['speedup_low']:.3f}-{control['speedup_high']:.3f}), headline/ideal "
                  f"{headline['measured_over_ideal']:.3f}, {wall:.0f} s, load {load:.2f}", flush=True)  # fmt: skip
    save_table(pd.DataFrame(rows), "04_aa_isolation_vit_small", out=ROOT / "figures", floatfmt=".3f")
    save_raw(pd.concat(raws, ignore_index=True), "04_aa_isolation_vit_small", out=ROOT / "figures")


if __name__ == "__main__":
    sys.exit(main())
