"""Notebook 08: SkipViT's accuracy claims trained from scratch, with seeds (the ``scratch`` protocol).

Seven rows, one recipe, every row trained from random weights with each seed: the baseline; EViT's fused token
6 / 45 %; plain dropping 6 / 55 % (no skip: isolates what the skip buys); the headline 6 / 55 % / skip 11;
4,7 / 30 %,30 % / skip 10 with and without warm-up (15 % of the epochs, Table 3); and timm's own PatchDropout
(``patch_drop_rate``: random patches dropped at the input of every block during training, all kept at test) at
the rate whose training FLOPs match the headline row's. Every (row, seed) is its own resumable run in the cache
(``data/cache/skipvit/``); :func:`scratch_runs` loads the runs that finished (``row.json``), resumes the one that
was interrupted and trains only what is missing. :func:`scratch_summary` pairs every row with the baseline by
seed (mean difference with a 95 % paired t interval); :func:`claim_verdicts` states, per paper claim, reproduced /
contradicted / cannot tell, with the smallest difference the protocol resolves.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy import stats

from .. import bench
from ..config import SCALES, Scale
from ..data import build_splits
from ..files import atomic_write_json
from ..plots import new_figure
from ..skipvit import BASELINE, EXTRA, HEADLINE, TABLE1, TABLE3, SkipViTSettings, apply_skipvit, configure, flop_gain
from ..train import default_model_factory
from .skipvit_runs import RowTraining, budget_for, run_dir, train_row

ROW_FILE = "row.json"  # one finished run's results row, so aggregating needs no re-evaluation


@dataclass(frozen=True)
class ScratchBudget:
    """How notebook 08 trains: ``scratch`` (the protocol, ~90 min on a 2-core CPU) or ``smoke`` (seconds)."""

    training: RowTraining  # every row from scratch, every seed
    note: str = ""


BUDGETS: dict[str, ScratchBudget] = {
    "smoke": ScratchBudget(
        RowTraining(
            "smoke",
            dataclasses.replace(
                SCALES["smoke"].train, train_size=128, val_size=64, test_size=128, epochs=2, batch_size=32
            ),
            seeds=(0, 1),
            warmup_fraction=0.5,
        ),
        note="smoke: numbers meaningless",
    ),
    "scratch": ScratchBudget(RowTraining.of(SCALES["scratch"]), note=SCALES["scratch"].description),
}


def budget(scale: Scale | str | None = None) -> ScratchBudget:
    """Notebook 08's budget; any scale but ``scratch`` (the protocol) and ``smoke`` (CI) is refused: run it with
    ``python -m vitstudy report --scale scratch --only 08``."""
    return budget_for(BUDGETS, scale)


@dataclass(frozen=True)
class ScratchRow:
    """One row of the protocol: its SkipViT settings, whether dropping waits for a warm-up, and whether it is
    timm's PatchDropout at the rate matching the headline row's FLOPs."""

    settings: SkipViTSettings
    warmup: bool = False
    patch_dropout: bool = False

    @property
    def label(self) -> str:
        if self.patch_dropout:
            return "timm PatchDropout (FLOPs of 6 / 55% / skip 11)"
        return self.settings.label + (" + warm-up" if self.warmup else "")


SCRATCH_ROWS: dict[str, ScratchRow] = {
    "baseline": ScratchRow(BASELINE),
    "fused_6_45": ScratchRow(TABLE1["fused_6_45"]),
    "drop_6_55": ScratchRow(EXTRA["drop_6_55"]),
    HEADLINE: ScratchRow(TABLE1[HEADLINE]),
    "skip_4_7_30_s10": ScratchRow(TABLE3),
    "skip_4_7_30_s10_warmup": ScratchRow(TABLE3, warmup=True),
    "patch_dropout": ScratchRow(BASELINE, patch_dropout=True),
}


def matched_patch_drop_rate(budget: ScratchBudget, row: str = HEADLINE) -> dict[str, float]:
    """timm ``patch_drop_rate`` whose training-forward FLOPs per image come closest to ``row``'s.

    timm keeps ``int(L · (1 - rate))`` of L patches; the rate returned keeps exactly the best count (half a
    patch above it, so that the float product cannot round down to one fewer).
    """
    cfg = budget.training.train
    splits = build_splits(cfg)
    input_size = splits.input_size
    model = apply_skipvit(default_model_factory(cfg, splits))
    target = flop_gain(configure(model, SCRATCH_ROWS[row].settings), input_size)
    patches = model.patch_embed.num_patches
    x = torch.randn(1, *input_size)

    def flops(keep: int) -> float:
        rate = 1 - (keep + 0.5) / patches
        with_rate = dataclasses.replace(cfg, model_kwargs={**cfg.model_kwargs, "patch_drop_rate": rate})
        dropped = default_model_factory(with_rate, splits).train()  # PatchDropout is active in training only
        return bench.count_flops(dropped, x)

    goal = target["gflops_on"] * 1e9
    low, high = 1, patches  # FLOPs grow with the patches kept: bisect for the first count at or above the goal
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if flops(middle) < goal else (low, middle)
    keep = min({max(1, low - 1), low}, key=lambda k: abs(flops(k) - goal))
    rate = round(1 - (keep + 0.5) / patches, 4)
    return {"patch_drop_rate": rate, "patches_kept": keep, "patches": patches,
            "gflops": flops(keep) / 1e9, "target_gflops": target["gflops_on"]}  # fmt: skip


def _row_run(training: RowTraining, name: str, drop_rate: float, seed: int) -> tuple[RowTraining, int, Path]:
    """(the recipe one row trains with: the protocol's plus its PatchDropout rate, its warm-up, its cache folder)."""
    row = SCRATCH_ROWS[name]
    if row.patch_dropout:
        cfg = training.train
        train = dataclasses.replace(cfg, model_kwargs={**cfg.model_kwargs, "patch_drop_rate": drop_rate})
        training = dataclasses.replace(training, train=train)
    warmup = training.warmup_epochs if row.warmup else 0
    return training, warmup, run_dir(training, name, row.settings, warmup, seed)


def scratch_row(training: RowTraining, name: str, seed: int, drop_rate: float,
                progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """One (row, seed): loaded from its ``row.json`` when it finished, else trained (resuming) and saved."""
    row = SCRATCH_ROWS[name]
    training, warmup, folder = _row_run(training, name, drop_rate, seed)
    if (folder / ROW_FILE).is_file():
        result = json.loads((folder / ROW_FILE).read_text())
    else:
        result = train_row(training, name, row.settings, seed, warmup=warmup, progress=progress)
        result.pop("history")
        result.update(label=row.label, run_dir=str(folder))
        atomic_write_json(folder / ROW_FILE, result)
    history = pd.read_csv(folder / "metrics.csv").assign(row=name, seed=seed, warmup_epochs=warmup)
    return {**result, "history": history}


def missing_runs(budget: ScratchBudget, rows: tuple[str, ...] | None = None) -> list[tuple[str, int]]:
    """The (row, seed) pairs without a finished ``row.json`` yet."""
    drop_rate = matched_patch_drop_rate(budget)["patch_drop_rate"]
    return [(name, seed) for name in rows or tuple(SCRATCH_ROWS) for seed in budget.training.seeds
            if not (_row_run(budget.training, name, drop_rate, seed)[2] / ROW_FILE).is_file()]  # fmt: skip


def default_workers() -> int:
    """Processes that train the study side by side: one single-thread process per core on a CPU, one on a GPU.

    On a shared 2-core VM a 2-thread training process collapses whenever anything else runs (measured: ~23 im/s
    against ~197 im/s for one thread of the scratch model), while one single-thread process per core does not.
    """
    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


def _train_in_worker(
    training: RowTraining, name: str, seed: int, drop_rate: float, environ: dict[str, str]
) -> tuple[str, int, float]:
    """Runs in a worker process: one (row, seed) on one thread; returns its training minutes."""
    # A forkserver child inherits the server's environment, which may predate the caller's VITSTUDY_* settings.
    os.environ.update(environ)
    torch.set_num_threads(1)
    return name, seed, scratch_row(training, name, seed, drop_rate)["train_minutes"]


def train_missing(
    budget: ScratchBudget,
    workers: int,
    rows: tuple[str, ...] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> None:
    """Train every missing (row, seed) in ``workers`` single-thread processes (seed-major order, so an
    interrupted study already pairs rows with the baseline). A run killed half-way resumes from its last epoch."""
    missing = missing_runs(budget, rows)
    order = sorted(missing, key=lambda pair: (pair[1], list(SCRATCH_ROWS).index(pair[0])))
    if not order:
        return
    drop_rate = matched_patch_drop_rate(budget)["patch_drop_rate"]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "timm", __name__])
    start = time.monotonic()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        environ = {key: value for key, value in os.environ.items() if key.startswith("VITSTUDY_")}
        futures = [pool.submit(_train_in_worker, budget.training, name, seed, drop_rate, environ)
                   for name, seed in order]  # fmt: skip
        for done, future in enumerate(as_completed(futures), 1):
            name, seed, minutes = future.result()
            log(f"{name} seed {seed} trained in {minutes:.1f} min ({done}/{len(order)} runs, "
                f"{(time.monotonic() - start) / 60:.1f} min elapsed, {workers} workers)")  # fmt: skip


def scratch_runs(
    budget: ScratchBudget,
    rows: tuple[str, ...] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: None,
    workers: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every (row, seed), seed-major (all rows of seed 0 first, so an interrupted study already pairs rows with
    the baseline); returns (one results row per run, the per-epoch histories). Finished runs are only read;
    with ``workers`` > 1 the missing ones are first trained side by side (:func:`train_missing`)."""
    rows = rows or tuple(SCRATCH_ROWS)
    if workers > 1:
        train_missing(budget, workers, rows, log)
    drop_rate = matched_patch_drop_rate(budget)["patch_drop_rate"]
    results = []
    for seed in budget.training.seeds:
        for name in rows:
            log(f"{name} seed {seed}")
            results.append(scratch_row(budget.training, name, seed, drop_rate, progress))
    histories = pd.concat([r.pop("history") for r in results], ignore_index=True)
    return pd.DataFrame(results), histories


# ----------------------------------------------------------------------------------------------------------
# Statistics: paired by seed


def paired_difference(values: pd.Series, reference: pd.Series) -> dict[str, float]:
    """Mean of (values − reference) over the seeds (index) both have, with its 95 % paired t interval
    (``scipy.stats.ttest_rel``) and half-width; fewer than 2 pairs: no interval."""
    pairs = pd.concat([values, reference], axis=1).dropna()
    n = len(pairs)
    mean = float((pairs.iloc[:, 0] - pairs.iloc[:, 1]).mean()) if n else math.nan
    if n < 2:
        return {"diff": mean, "diff_low": math.nan, "diff_high": math.nan, "resolvable": math.nan, "pairs": n}
    low, high = stats.ttest_rel(pairs.iloc[:, 0], pairs.iloc[:, 1]).confidence_interval()
    return {"diff": mean, "diff_low": float(low), "diff_high": float(high), "resolvable": float(high) - mean,
            "pairs": n}  # fmt: skip


def scratch_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per row: seeds, mean ± std of top-1 with dropping on and off at test time, and the paired difference
    to the baseline (dropping on; and off) with its 95 % interval."""
    by_seed = {column: runs.pivot(index="seed", columns="row", values=column)
               for column in ("top1_dropping_on", "top1_dropping_off")}  # fmt: skip
    baseline = by_seed["top1_dropping_on"].get("baseline", pd.Series(dtype=float))
    out = []
    for name, mine in runs.groupby("row", sort=False):
        record: dict[str, Any] = {"row": name, "setting": mine["label"].iloc[0], "seeds": len(mine)}
        for column in ("top1_dropping_on", "top1_dropping_off"):
            record[column] = mine[column].mean()
            record[f"{column}_std"] = mine[column].std()
        for column, tag in (("top1_dropping_on", "on"), ("top1_dropping_off", "off")):
            paired = paired_difference(by_seed[column][name], baseline)
            record.update({f"{k}_{tag}" if k != "pairs" else k: v for k, v in paired.items()})
        record["train_minutes"] = mine["train_minutes"].mean()
        record["loop_im_s"] = mine["loop_im_s"].median()
        out.append(record)
    return pd.DataFrame(out)


# Each claim: (what, row, compared with, the paper's difference in points, the direction the paper claims).
CLAIMS = (
    ("6 / 55% / skip 11 keeps the baseline's top-1", HEADLINE, "baseline", -0.01, "none"),
    ("fused token 6 / 45% loses top-1 against the baseline", "fused_6_45", "baseline", -1.78, "worse"),
    ("skip 6 / 55% beats the fused token 6 / 45%", HEADLINE, "fused_6_45", 1.77, "better"),
    ("warm-up (15% of epochs) helps 4,7 / 30% / skip 10", "skip_4_7_30_s10_warmup", "skip_4_7_30_s10", 2.55,
     "better"),
    ("ours: the skip beats plain dropping at 6 / 55%", HEADLINE, "drop_6_55", math.nan, "better"),
    ("ours: [CLS]-ranked skip beats timm's random PatchDropout at equal FLOPs", HEADLINE, "patch_dropout", math.nan,
     "better"),
)  # fmt: skip
NO_LOSS_MARGIN = 1.0  # points: "keeps top-1" is reproduced when a loss larger than this is excluded


def verdict(low: float, high: float, direction: str) -> str:
    """reproduced / contradicted / cannot tell, from a 95 % interval of (row − reference) in points."""
    if math.isnan(low):
        return "cannot tell (fewer than 2 seeds)"
    if direction == "none":
        if high < 0:
            return "contradicted (a loss)"
        return "reproduced" if low > -NO_LOSS_MARGIN else f"cannot tell (a loss up to {-low:.2f} not excluded)"
    sign = 1 if direction == "better" else -1
    if sign * low > 0 and sign * high > 0:
        return "reproduced"
    if sign * low < 0 and sign * high < 0:
        return "contradicted (the opposite)"
    return "cannot tell at this scale"


def claim_verdicts(runs: pd.DataFrame) -> pd.DataFrame:
    """One line per paper claim (and two of ours): our paired difference with its 95 % interval, the smallest
    difference this protocol resolves (the interval's half-width), and the verdict. Top-1 with dropping on."""
    by_seed = runs.pivot(index="seed", columns="row", values="top1_dropping_on")
    out = []
    for claim, row, reference, paper, direction in CLAIMS:
        if not {row, reference} <= set(by_seed.columns):
            continue
        paired = paired_difference(by_seed[row], by_seed[reference])
        out.append({"claim": claim, "row": row, "compared_with": reference, "paper_diff": paper, **paired,
                    "verdict": verdict(paired["diff_low"], paired["diff_high"], direction)})  # fmt: skip
    return pd.DataFrame(out)


def scratch_plot(runs: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Left: test top-1 (dropping on) of every seed and the row mean. Right: paired difference to the
    baseline with its 95 % interval, dropping on (filled) and off (open) at test time."""
    fig = new_figure((11, 4.2))
    left, right = fig.subplots(1, 2)
    y = np.arange(len(summary))
    for i, name in enumerate(summary["row"]):
        seeds = runs[runs["row"] == name]["top1_dropping_on"].to_numpy(dtype=float)
        left.scatter(seeds, np.full(len(seeds), i), color="tab:gray", s=14, zorder=2)
    left.errorbar(summary["top1_dropping_on"], y, xerr=summary["top1_dropping_on_std"].fillna(0), fmt="D",
                  color="tab:blue", capsize=3, label="mean ± std over seeds")  # fmt: skip
    left.set_yticks(y, summary["setting"], fontsize=7)
    left.invert_yaxis()
    left.set(xlabel="test top-1 (%), dropping on", title="every seed (grey) and the mean")
    left.grid(axis="x", alpha=0.3)
    left.legend(fontsize=7)
    for tag, offset, face in (("on", -0.12, "tab:orange"), ("off", 0.12, "none")):
        diff = summary[f"diff_{tag}"].to_numpy(dtype=float)
        low = diff - summary[f"diff_low_{tag}"].to_numpy(dtype=float)
        high = summary[f"diff_high_{tag}"].to_numpy(dtype=float) - diff
        right.errorbar(diff, y + offset, xerr=[np.nan_to_num(low), np.nan_to_num(high)], fmt="o", capsize=3,
                       color="tab:orange", mfc=face, label=f"dropping {tag} at test")  # fmt: skip
    right.axvline(0, color="black", lw=0.8)
    right.set_yticks(y, [""] * len(y))
    right.invert_yaxis()
    right.set(xlabel="minus baseline (points), paired by seed, 95% interval", title="difference to the baseline")
    right.grid(axis="x", alpha=0.3)
    right.legend(fontsize=7)
    return fig
