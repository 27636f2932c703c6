"""Where a quick report's time goes, and what the 20-minute goal leaves for everything else.

A hand-run reading of a committed report manifest (no timing of its own): run

    python -m vitstudy measure report_time

It reads the newest manifest under ``figures/logs/`` whose cells record what they wrote
(:mod:`vitstudy.report.cell_outputs`) and sorts every cell's seconds into one kind (:data:`KINDS`): timing behind a
table that meets its target, other timing, training and caching (a cell that wrote into the cache), and the rest. A
cell times the tables whose raw times it saved (``tables/raw/<table>.csv``); such a table meets its target when a
row of it reads "within target" in the committed report (``figures/tables``: the tables that *already* meet their
targets) or in the recorded run itself. The goal is 20 minutes *without widening the intervals of the tables
that already meet their targets*, so the first kind cannot shrink without a decision about those tables;
:func:`time_budget` says what the goal leaves for the others. :func:`measure` writes
``figures/tables/19_quick_report_time.{csv,md}`` (per kind) and ``19_quick_report_cells.{csv,md}`` (per cell).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import check
from ..files import project_root
from ..report import save_table
from ..report.cell_outputs import tables_within_target

GOAL_S = 20 * 60  # the quick report within 20 minutes on a quiet 2-core machine, from empty caches
MET_TIMING = "timing behind a table that meets its target"
OTHER_TIMING = "timing, no row meeting a target"
TRAINING = "training and caching"
REST = "evaluation, figures, imports"
STARTUP = "kernel start and publishing"
KINDS = (MET_TIMING, OTHER_TIMING, TRAINING, REST, STARTUP)
RAW_TIMES = "tables/raw/"  # every timed table saves its raw times here (vitstudy.report.save_raw)


def timed_tables(cell: dict[str, Any]) -> list[str]:
    """The tables a cell timed: those whose raw times it saved."""
    return [Path(name).stem for name in cell["wrote"] if name.startswith(RAW_TIMES)]


def cell_kind(cell: dict[str, Any], met: set[str]) -> str:
    """One cell's kind from what it wrote: timing first (a timed cell may also train), then the cache; ``met``
    names the tables that meet their target."""
    if timed := timed_tables(cell):
        return MET_TIMING if met.intersection(timed) else OTHER_TIMING
    return TRAINING if cell["cache_files"] > 0 else REST


def met_tables(manifest: dict[str, Any], committed: Path | None = None) -> dict[str, str]:
    """``{table: where it meets its target}`` ("committed report", "this run" or both) over the run's notebooks
    (their ``within_target_rows``) and the committed tables under ``committed``."""
    run = {name for entry in manifest["notebooks"].values() for name in entry.get("within_target_rows", {})}
    report = set(tables_within_target(committed)) if committed is not None else set()
    where = {"committed report": report, "this run": run}
    return {name: " and ".join(k for k, names in where.items() if name in names) for name in sorted(run | report)}


def cell_table(manifest: dict[str, Any], met: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per cell of every notebook (plus one per notebook for its kernel start and publishing); ``met``:
    :func:`met_tables` (by default, the run's own)."""
    met = met_tables(manifest) if met is None else met
    rows = []
    for notebook, entry in manifest["notebooks"].items():
        cells = entry.get("cells", [])
        check(
            all("wrote" in cell for cell in cells),
            "manifest",
            notebook,
            "cells that record what they wrote (a report run with vitstudy.report.cell_outputs)",
        )
        for cell in cells:
            timed = timed_tables(cell)
            rows.append(
                {
                    "notebook": notebook,
                    "cell": cell["cell"],
                    "first_line": cell["first_line"],
                    "seconds": cell["seconds"],
                    "kind": cell_kind(cell, set(met)),
                    "timed": ", ".join(timed),
                    "meets_target_in": "; ".join(f"{t}: {met[t]}" for t in timed if t in met),
                    "cache_files": cell["cache_files"],
                }
            )
        outside = entry["seconds"] - sum(cell["seconds"] for cell in cells)
        rows.append(
            {
                "notebook": notebook,
                "cell": "outside cells",
                "first_line": "",
                "seconds": round(outside, 1),
                "kind": STARTUP,
                "timed": "",
                "meets_target_in": "",
                "cache_files": 0,
            }
        )
    return pd.DataFrame(rows)


def machine(manifest: dict[str, Any]) -> str:
    """The machine a manifest's run was on, in words: device, what torch dispatched to, threads."""
    env = next(iter(manifest["notebooks"].values()))["environment"]
    return f"{env['device_name']} ({env['cpu_capability']}, {env['cpu_threads']} threads, torch {env['torch']})"


def time_budget(cells: pd.DataFrame, goal_s: float = GOAL_S) -> pd.DataFrame:
    """Seconds per kind, their share of the run and of the goal; ``left_for_the_rest_s`` is what the goal leaves
    for every other kind once the timing behind met targets keeps its seconds."""
    per_kind = cells.groupby("kind")["seconds"].agg(["sum", "count"]).reindex(KINDS, fill_value=0)
    total = float(per_kind["sum"].sum())
    met = float(per_kind.loc[MET_TIMING, "sum"])
    table = pd.DataFrame(
        {
            "kind": KINDS,
            "seconds": per_kind["sum"].to_numpy().round(1),
            "cells": per_kind["count"].to_numpy(),
            "share_of_run_pct": (100 * per_kind["sum"] / total).to_numpy().round(1),
            "share_of_goal_pct": (100 * per_kind["sum"] / goal_s).to_numpy().round(1),
        }
    )
    table["run_s"], table["goal_s"] = round(total, 1), goal_s
    table["left_for_the_rest_s"] = round(goal_s - met, 1)
    table["rest_s"] = round(total - met, 1)
    return table


def findings(budget: pd.DataFrame, machine_name: str) -> str:
    """What the split says about the 20-minute goal, in words."""
    first = budget.iloc[0]
    met = float(budget.loc[budget["kind"] == MET_TIMING, "seconds"].iloc[0])
    left, rest = float(first["left_for_the_rest_s"]), float(first["rest_s"])
    run, goal = float(first["run_s"]), float(first["goal_s"])
    verdict = (
        f"everything else would have to shrink from {rest / 60:.1f} to {left / 60:.1f} min ({rest / left:.1f}x less)"
        if left > 0
        else "nothing else fits at all"
    )
    return (
        f"On {machine_name} the quick report took {run / 60:.1f} min against a goal of {goal / 60:.0f}. "
        f"The timing behind tables that meet their target took {met / 60:.1f} min ({100 * met / goal:.0f} % of "
        f"the goal); kept as it is, {verdict}."
    )


def newest_manifest(folder: Path) -> Path:
    """The manifest under ``folder`` whose run is the latest among those that record what each cell wrote."""
    found = []
    for path in folder.glob("*manifest.json"):
        manifest = json.loads(path.read_text())
        cells = [cell for entry in manifest["notebooks"].values() for cell in entry.get("cells", [])]
        if cells and all("wrote" in cell for cell in cells):
            found.append((max(entry["date"] for entry in manifest["notebooks"].values()), path))
    check(bool(found), "folder", str(folder), "a report manifest whose cells record what they wrote")
    return max(found)[1]


def measure(folder: Path | None = None) -> None:
    """Split the newest recorded quick report's time by kind; write ``19_quick_report_time`` and its cells."""
    path = newest_manifest(folder or project_root() / "figures" / "logs")
    manifest = json.loads(path.read_text())
    cells = cell_table(manifest, met_tables(manifest, committed=project_root() / "figures"))
    budget = time_budget(cells).assign(machine=machine(manifest), manifest=path.name)
    out = project_root() / "figures"
    save_table(budget, "19_quick_report_time", out=out)
    save_table(cells.assign(manifest=path.name), "19_quick_report_cells", out=out)
    print(budget[["kind", "seconds", "share_of_run_pct", "share_of_goal_pct"]].to_string(index=False))
    print(findings(budget, machine(manifest)))
