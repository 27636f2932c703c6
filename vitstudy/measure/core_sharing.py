"""Two package processes training at once: do they share the cores, or collapse? (:mod:`vitstudy.threads`)

A hand-run measurement (a timing is no pass/fail on a shared CPU): on a QUIET machine, run

    python -m vitstudy measure sharing

Each arm starts fresh worker processes (``spawn``) that train the default model on one fixed random batch
(:func:`vitstudy.steps.random_batch_step`) for a fixed time and report images/s: one process alone with torch's
default threads, two side by side with the default threads (what two notebooks did before), and two side by side
under the sharing rule (:func:`vitstudy.threads.share_cores`, each process's share re-read every
:data:`RECHECK_S`), and the lone process again as an A/A copy. The arms alternate over rounds (ABCD, DCBA, ...).
Processes running at once cannot be timed by the comparison engine (it times one arm at a time), so each row is the
median images/s over rounds with the rounds' range, and its total over the lone process is the median of per-round
paired ratios; the rule meets its goal when two processes together do at least 0.97 of what one does alone.
:func:`measure` writes ``figures/tables/19_core_sharing.{csv,md}`` with the machine in each row.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .. import report
from ..bench import environment_info
from ..bench.comparison import round_orders
from ..config import scale_budget
from ..files import project_root
from ..models import create_model
from ..steps import random_batch_step
from ..threads import available_cores, register, share_cores

TABLE = "19_core_sharing"
ALONE = "alone, default threads"
ALONE_COPY = "alone, default threads (A/A copy)"  # the same arm again: how far the protocol moves by itself
ARMS = {
    ALONE: (1, False),
    "two at once, default threads": (2, False),
    "two at once, sharing rule": (2, True),
    ALONE_COPY: (1, False),
}  # arm -> (processes, sharing)
RECHECK_S = 1.0  # how often a sharing worker re-reads its share (the training loop does it every epoch)


@dataclass(frozen=True)
class SharingBudget:
    """How long each arm trains, and on what."""

    scale: str
    seconds: float  # timed training per process and round, after the warm-up steps
    rounds: int = 3
    batch_size: int = 128  # the study's tiny model at its training batch
    warmup_steps: int = 3
    model: str = "vitstudy_tiny_patch4_28"


BUDGETS: dict[str, SharingBudget] = {
    "smoke": SharingBudget("smoke", seconds=0.5, rounds=1, batch_size=8, warmup_steps=1),
    "quick": SharingBudget("quick", seconds=20.0),  # long enough per arm that a scheduler hiccup is a small share
}


def budget(scale: str | None = None) -> SharingBudget:
    """The sharing measurement's budget at ``scale`` (:func:`vitstudy.config.scale_budget`)."""
    return scale_budget(BUDGETS, scale)


def _train_for(budget: SharingBudget, sharing: bool, registry: str, start, results) -> None:
    """Runs in a worker: register (when sharing), wait for the others, then train ``budget.seconds``; puts
    (images/s, threads used) on ``results``."""
    if sharing:
        register(folder=Path(registry))
    torch.manual_seed(0)
    step = random_batch_step(create_model(budget.model), budget.batch_size, (1, 28, 28), 10)
    start.wait()  # every process of the arm is registered and built: the shares are final
    threads = share_cores(folder=Path(registry)) if sharing else torch.get_num_threads()
    for _ in range(budget.warmup_steps):
        step()
    images, started = 0, time.perf_counter()
    checked = started
    while (now := time.perf_counter()) - started < budget.seconds:
        if sharing and now - checked > RECHECK_S:
            threads, checked = share_cores(folder=Path(registry)), now
        step()
        images += budget.batch_size
    results.put((images / (time.perf_counter() - started), threads))


def run_arm(budget: SharingBudget, processes: int, sharing: bool) -> list[tuple[float, int]]:
    """Start ``processes`` workers at once and return each one's (images/s, threads)."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes), context.Queue()
    with tempfile.TemporaryDirectory() as registry:  # only this arm's processes count each other
        workers = [
            context.Process(target=_train_for, args=(budget, sharing, registry, start, results))
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        out = [results.get() for _ in workers]
        for worker in workers:
            worker.join()
    return out


def sharing_table(budget: SharingBudget) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per arm: median images/s per process and in total over rounds (with their range), and the total
    over one process alone as the median of per-round paired ratios (each round's arm against that round's
    process alone) with their range; the A/A copy of the lone arm shows the protocol's own spread. And the raw
    per-process, per-round numbers."""
    raw = []
    for round_index, names in enumerate(round_orders(list(ARMS), budget.rounds)):
        for name in names:
            processes, sharing = ARMS[name]
            for worker, (speed, threads) in enumerate(run_arm(budget, processes, sharing)):
                raw.append(
                    {"arm": name, "round": round_index, "worker": worker, "images_per_s": speed, "threads": threads}
                )
    raw = pd.DataFrame(raw)
    totals = raw.groupby(["arm", "round"], sort=False).agg(
        total=("images_per_s", "sum"), each=("images_per_s", "median"), threads=("threads", "max")
    )
    ratios = totals["total"] / totals.loc[ALONE, "total"].reindex(totals.index, level="round")
    env = environment_info("cpu")
    rows = []
    for name, (processes, sharing) in ARMS.items():
        arm = totals.loc[name]
        rows.append(
            {
                "arm": name,
                "processes": processes,
                "sharing_rule": sharing,
                "threads_each": int(arm["threads"].max()),
                "images_per_s_each": arm["each"].median(),
                "images_per_s_total": arm["total"].median(),
                "total_low": arm["total"].min(),
                "total_high": arm["total"].max(),
                "total_over_alone": ratios.loc[name].median(),
                "total_over_alone_low": ratios.loc[name].min(),
                "total_over_alone_high": ratios.loc[name].max(),
                "meets_goal": bool(ratios.loc[name].median() >= 0.97) if processes > 1 else None,
            }
        )
    frame = pd.DataFrame(rows).assign(
        cores=available_cores(),
        rounds=budget.rounds,
        seconds=budget.seconds,
        batch_size=budget.batch_size,
        model=budget.model,
        device=f"cpu: {env['device_name']}",
        torch=env["torch"],
    )
    return frame, raw


def measure(scale: str = "quick", out: str | None = None) -> pd.DataFrame:
    """Run the sharing arms at ``scale`` and write ``19_core_sharing`` (table and raw numbers)."""
    table, raw = sharing_table(budget(scale))
    folder = out or project_root() / "figures"
    report.save_table(table, TABLE, out=folder)
    report.save_raw(raw, TABLE, out=folder)
    return table
