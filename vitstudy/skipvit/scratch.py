"""SkipViT's accuracy claims trained from scratch, with seeds (notebook 08): the ``scratch`` protocol.

Seven rows, one recipe, every row trained from random weights with each seed: the baseline; EViT's fused token
6 / 45 %; plain dropping 6 / 55 % (no skip: isolates what the skip buys); the headline 6 / 55 % / skip 11;
4,7 / 30 %,30 % / skip 10 with and without warm-up (15 % of the epochs, Table 3); and timm's own PatchDropout
(``patch_drop_rate``: random patches dropped at the input of every block during training, all kept at test) at
the rate whose training FLOPs match the headline row's. Every (row, seed) is its own resumable run in the cache
(``data/cache/skipvit/``); :func:`scratch_runs` loads the runs that finished (``row.json``), resumes the one that
was interrupted and trains only what is missing. :func:`scratch_summary` pairs every row with the baseline by
seed (mean difference with a 95 % t interval); :func:`claim_verdicts` states, per paper claim, reproduced /
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
from typing import Any

import pandas as pd
import torch
from scipy import stats

from .. import bench
from ..config import Scale, get_scale
from ..data import build_splits
from ..files import atomic_write_json
from ..train import default_model_factory
from .patch import apply_skipvit, configure, flop_gain
from .settings import BASELINE, EXTRA, TABLE1, TABLE3, SkipViTSettings
from .study import SkipViTBudget, run_dir, train_row

HEADLINE = "skip_6_55_s11"
ROW_FILE = "row.json"  # one finished run's results row, so aggregating needs no re-evaluation


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


def scratch_budget(scale: Scale | str | None = None) -> SkipViTBudget:
    """Notebook 08's budget: ``scratch`` (the protocol, ~90 min on a 2-core CPU) or ``smoke`` (seconds)."""
    scale = scale if isinstance(scale, Scale) else get_scale(scale)
    if scale.name not in ("smoke", "scratch"):
        raise ValueError(
            f"scale={scale.name!r} is not allowed for the from-scratch study: expected 'scratch' (the protocol) or "
            "'smoke' (CI); run it with python -m vitstudy report --scale scratch --only 08"
        )
    if scale.name == "smoke":
        cfg = dataclasses.replace(scale.train, train_size=128, val_size=64, test_size=128, epochs=2, batch_size=32)
        return SkipViTBudget("smoke", cfg, seeds=(0, 1), warmup_fraction=0.5, note="smoke: numbers meaningless")
    return SkipViTBudget("scratch", scale.train, seeds=scale.seeds, note=scale.description)


def matched_patch_drop_rate(budget: SkipViTBudget, row: str = HEADLINE) -> dict[str, float]:
    """timm ``patch_drop_rate`` whose training-forward FLOPs per image come closest to ``row``'s.

    timm keeps ``int(L · (1 - rate))`` of L patches; the rate returned keeps exactly the best count (half a
    patch above it, so that the float product cannot round down to one fewer).
    """
    cfg = budget.train
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


def row_budget(budget: SkipViTBudget, name: str, drop_rate: float | None = None) -> SkipViTBudget:
    """The budget one row trains with: the protocol's, plus the PatchDropout rate for that row."""
    if not SCRATCH_ROWS[name].patch_dropout:
        return budget
    rate = matched_patch_drop_rate(budget)["patch_drop_rate"] if drop_rate is None else drop_rate
    cfg = budget.train
    return dataclasses.replace(
        budget, train=dataclasses.replace(cfg, model_kwargs={**cfg.model_kwargs, "patch_drop_rate": rate})
    )


def scratch_row(budget: SkipViTBudget, name: str, seed: int, drop_rate: float | None = None,
                progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """One (row, seed): loaded from its ``row.json`` when it finished, else trained (resuming) and saved."""
    row = SCRATCH_ROWS[name]
    budget = row_budget(budget, name, drop_rate)
    warmup = budget.warmup_epochs if row.warmup else 0
    folder = run_dir(budget, name, row.settings, warmup, seed)
    if (folder / ROW_FILE).is_file():
        result = json.loads((folder / ROW_FILE).read_text())
    else:
        result = train_row(budget, name, row.settings, seed, warmup=warmup, progress=progress)
        result.pop("history")
        result.update(label=row.label, run_dir=str(folder))
        atomic_write_json(folder / ROW_FILE, result)
    history = pd.read_csv(folder / "metrics.csv").assign(row=name, seed=seed, warmup_epochs=warmup)
    return {**result, "history": history}


def missing_runs(budget: SkipViTBudget, rows: tuple[str, ...] | None = None) -> list[tuple[str, int]]:
    """The (row, seed) pairs without a finished ``row.json`` yet."""
    rows = rows or tuple(SCRATCH_ROWS)
    drop_rate = matched_patch_drop_rate(budget)["patch_drop_rate"]
    out = []
    for name in rows:
        row, b = SCRATCH_ROWS[name], row_budget(budget, name, drop_rate)
        for seed in budget.seeds:
            folder = run_dir(b, name, row.settings, b.warmup_epochs if row.warmup else 0, seed)
            if not (folder / ROW_FILE).is_file():
                out.append((name, seed))
    return out


def default_workers() -> int:
    """Processes that train the study side by side: one single-thread process per core on a CPU, one on a GPU.

    On a shared 2-core VM a 2-thread training process collapses whenever anything else runs (measured: ~23 im/s
    against ~197 im/s for one thread of the scratch model), while one single-thread process per core does not.
    """
    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


def _train_in_worker(
    budget: SkipViTBudget, name: str, seed: int, drop_rate: float, environ: dict[str, str]
) -> tuple[str, int, float]:
    """Runs in a worker process: one (row, seed) on one thread; returns its training minutes."""
    # A forkserver child inherits the server's environment, which may predate the caller's VITSTUDY_* settings.
    os.environ.update(environ)
    torch.set_num_threads(1)
    return name, seed, scratch_row(budget, name, seed, drop_rate)["train_minutes"]


def train_missing(
    budget: SkipViTBudget,
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
        futures = [pool.submit(_train_in_worker, budget, name, seed, drop_rate, environ) for name, seed in order]
        for done, future in enumerate(as_completed(futures), 1):
            name, seed, minutes = future.result()
            log(f"{name} seed {seed} trained in {minutes:.1f} min ({done}/{len(order)} runs, "
                f"{(time.monotonic() - start) / 60:.1f} min elapsed, {workers} workers)")  # fmt: skip


def scratch_runs(
    budget: SkipViTBudget,
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
    for seed in budget.seeds:
        for name in rows:
            log(f"{name} seed {seed}")
            results.append(scratch_row(budget, name, seed, drop_rate, progress))
    histories = pd.concat([r.pop("history") for r in results], ignore_index=True)
    return pd.DataFrame(results), histories


# ----------------------------------------------------------------------------------------------------------
# Statistics: paired by seed


def paired_difference(values: pd.Series, reference: pd.Series) -> dict[str, float]:
    """Mean of (values − reference) over the seeds both have, with its 95 % t interval and half-width."""
    diff = (values - reference).dropna()
    n = len(diff)
    mean = float(diff.mean()) if n else math.nan
    if n < 2:
        return {"diff": mean, "diff_low": math.nan, "diff_high": math.nan, "resolvable": math.nan, "pairs": n}
    half = float(stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n))
    return {"diff": mean, "diff_low": mean - half, "diff_high": mean + half, "resolvable": half, "pairs": n}


def _by_seed(runs: pd.DataFrame, row: str, column: str) -> pd.Series:
    return runs[runs["row"] == row].set_index("seed")[column]


def scratch_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per row: seeds, mean ± std of top-1 with dropping on and off at test time, and the paired difference
    to the baseline (dropping on; and off) with its 95 % interval."""
    out = []
    for name in dict.fromkeys(runs["row"]):
        mine = runs[runs["row"] == name]
        record: dict[str, Any] = {"row": name, "setting": mine["label"].iloc[0], "seeds": len(mine)}
        for column in ("top1_dropping_on", "top1_dropping_off"):
            record[column] = mine[column].mean()
            record[f"{column}_std"] = mine[column].std()
        for column, tag in (("top1_dropping_on", "on"), ("top1_dropping_off", "off")):
            paired = paired_difference(_by_seed(runs, name, column), _by_seed(runs, "baseline", "top1_dropping_on"))
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
    out = []
    for claim, row, reference, paper, direction in CLAIMS:
        if not {row, reference} <= set(runs["row"]):
            continue
        paired = paired_difference(_by_seed(runs, row, "top1_dropping_on"),
                                   _by_seed(runs, reference, "top1_dropping_on"))  # fmt: skip
        out.append({"claim": claim, "row": row, "compared_with": reference, "paper_diff": paper, **paired,
                    "verdict": verdict(paired["diff_low"], paired["diff_high"], direction)})  # fmt: skip
    return pd.DataFrame(out)
