"""Notebook 08: SkipViT's accuracy claims trained from scratch, with seeds (the ``scratch`` protocol).

Two data sets, one recipe, every row trained from random weights with each of six seeds. On Fashion-MNIST seven
rows: the baseline; EViT's fused token 6 / 45 % (EViT's computation: in block 6 after the attention, raw
weights); plain dropping 6 / 55 % (no skip: isolates what the skip buys); the headline 6 / 55 % / skip 11;
4,7 / 30 %,30 % / skip 10 with and without warm-up (15 % of the epochs, Table 3); and timm's own PatchDropout
(``patch_drop_rate``: random patches dropped at the input of every block during training, all kept at test) at
the rate whose training FLOPs match the headline row's. On cluttered Fashion-MNIST (:mod:`vitstudy.cluttered`,
where the background is fragments of other items, not black) the five rows that separate the methods.

The runs: every (data set, row, seed) is its own resumable run in the cache (``data/cache/skipvit/``):
:func:`scratch_runs` loads the runs that finished (``row.json``), takes a run this machine never trained from the
committed per-run table (``figures/scratch/tables/08_runs.csv`` and its histories) when the run's folder name — the
fingerprint of its recipe, SkipViT settings, warm-up and seed — matches, resumes the one that was interrupted and
trains only what is missing.

The statistics: per data set, every row paired with its baseline by seed. :func:`paired_difference` is the mean of
(row − reference) over the seeds both have, with its 95 % paired t interval (``scipy.stats.ttest_rel``);
:func:`scratch_summary` gives it per row against the baseline, dropping on and off at test time;
:func:`claim_verdicts` states, per paper claim and two of ours, reproduced / contradicted / cannot tell, with the
smallest difference the protocol resolves (the interval's half-width); :func:`findings` says it in sentences.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ... import bench, executors
from ...checkpoint import read_run_json
from ...cluttered import on_cluttered
from ...config import SCALES, Scale, TrainConfig
from ...data import build_splits
from ...files import atomic_path, atomic_write_json, cache_dir, fingerprint, project_root
from ...plots import new_figure
from ...skipvit import BASELINE, EXTRA, HEADLINE, TABLE1, TABLE3, SkipViTSettings, apply_skipvit, configure, flop_gain
from ...train import default_model_factory
from ..seeds import paired_difference, seeds_to_resolve
from ..sentences import is_missing, number, paragraph
from .common import RowTraining, budget_for, run_dir, train_row

ROW_FILE = "row.json"  # one finished run's results row, so aggregating needs no re-evaluation


STUDY_DATASETS = ("fashion_mnist", "fashion_mnist_cluttered")


@dataclass(frozen=True)
class ScratchBudget:
    """How notebook 08 trains: ``scratch`` (the protocol, hours on a CPU) or ``smoke`` (seconds)."""

    training: RowTraining  # every row from scratch, every seed, on the first data set
    note: str = ""
    datasets: tuple[str, ...] | None = None  # None: only the training's own data set
    # Epochs on the cluttered set when they differ from the recipe's (None: the same). At the recipe's 7 epochs
    # its baseline reached 45.8 % validation top-1 while still gaining 1.4-4 points an epoch (Fashion-MNIST's:
    # 83 %, flat): far from converged, so the cluttered rows train twice as long, everything else equal.
    cluttered_epochs: int | None = None

    @property
    def study_datasets(self) -> tuple[str, ...]:
        return self.datasets or (self.training.train.dataset,)

    def training_on(self, dataset: str) -> RowTraining:
        """The same recipe on ``dataset``; the cluttered canvases (56x56) take the 49-token patch-8 model."""
        train = self.training.train
        if dataset == train.dataset:
            return self.training
        if dataset == "fashion_mnist_cluttered":
            train = dataclasses.replace(on_cluttered(train), epochs=self.cluttered_epochs or train.epochs)
        else:
            train = dataclasses.replace(train, dataset=dataset)
        return dataclasses.replace(self.training, train=train)


BUDGETS: dict[str, ScratchBudget] = {
    "smoke": ScratchBudget(
        RowTraining(
            "smoke",
            dataclasses.replace(
                # one step per epoch, one evaluation batch: the fewest that run every line of a run
                SCALES["smoke"].train,
                train_size=32,
                val_size=16,
                test_size=32,
                epochs=2,
                batch_size=32,
            ),
            seeds=(0, 1),
            warmup_fraction=0.5,
        ),
        note="smoke: numbers meaningless",
        datasets=STUDY_DATASETS,
    ),
    "scratch": ScratchBudget(
        RowTraining.of(SCALES["scratch"]),
        note=SCALES["scratch"].description + "; 14 epochs on the cluttered set",
        datasets=STUDY_DATASETS,
        cluttered_epochs=14,
    ),
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
# The rows each data set trains: every row on Fashion-MNIST; on the cluttered set the five that separate the
# methods (the warm-up question is about the schedule, not the background).
DATASET_ROWS: dict[str, tuple[str, ...]] = {
    "fashion_mnist": tuple(SCRATCH_ROWS),
    "fashion_mnist_cluttered": ("baseline", "fused_6_45", "drop_6_55", HEADLINE, "patch_dropout"),
}


def rows_on(dataset: str, rows: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The rows ``dataset`` trains (all rows on a data set outside the study, e.g. digits in tests), in order,
    restricted to ``rows`` when given."""
    chosen = DATASET_ROWS.get(dataset, tuple(SCRATCH_ROWS))
    return tuple(name for name in chosen if rows is None or name in rows)


# Matched rates found in this process, by recipe and row: the bisection builds a model per step, and a study asks
# for each data set's rate several times (the notebook, the missing runs, the runs).
_MATCHED_RATES: dict[str, dict[str, Any]] = {}


def matched_patch_drop_rate(budget: ScratchBudget, row: str = HEADLINE, dataset: str | None = None) -> dict[str, float]:
    """timm ``patch_drop_rate`` whose training-forward FLOPs per image come closest to ``row``'s, on ``dataset``'s
    model (default: the recipe's own data set).

    timm keeps ``int(L · (1 - rate))`` of L patches; the rate returned keeps exactly the best count (half a
    patch above it, so that the float product cannot round down to one fewer).
    """
    cfg = budget.training_on(dataset or budget.training.train.dataset).train
    key = fingerprint([dataclasses.asdict(cfg), row])
    if key not in _MATCHED_RATES:
        _MATCHED_RATES[key] = _match_patch_drop_rate(cfg, row)
    return dict(_MATCHED_RATES[key])


def _match_patch_drop_rate(cfg: TrainConfig, row: str) -> dict[str, Any]:
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
    return {
        "dataset": cfg.dataset,
        "patch_drop_rate": rate,
        "patches_kept": keep,
        "patches": patches,
        "gflops": flops(keep) / 1e9,
        "target_gflops": target["gflops_on"],
    }


def _row_run(training: RowTraining, name: str, drop_rate: float, seed: int) -> tuple[RowTraining, int, Path]:
    """(the recipe one row trains with: the protocol's plus its PatchDropout rate, its warm-up, its cache folder)."""
    row = SCRATCH_ROWS[name]
    if row.patch_dropout:
        cfg = training.train
        train = dataclasses.replace(cfg, model_kwargs={**cfg.model_kwargs, "patch_drop_rate": drop_rate})
        training = dataclasses.replace(training, train=train)
    warmup = training.warmup_epochs if row.warmup else 0
    return training, warmup, run_dir(training, name, row.settings, warmup, seed)


def committed_tables(scale: str) -> Path:
    """Where the report publishes a study scale's tables: ``figures/<scale>/tables`` in the checkout."""
    return project_root() / "figures" / scale / "tables"


def adopt_committed(folder: Path, tables: Path) -> bool:
    """Fill ``folder`` (a run this machine never finished) from the committed per-run table when a row there was
    trained in a folder of the same name — the same recipe, settings, warm-up and seed, so the same run.

    Writes ``row.json`` and ``metrics.csv`` into the cache folder (never touches the committed files); False when
    nothing matches or the committed table has no history for the run.
    """
    runs_file, histories_file = tables / "08_runs.csv", tables / "raw" / "08_histories.csv"
    if (folder / ROW_FILE).is_file() or not runs_file.is_file() or not histories_file.is_file():
        return False
    runs = pd.read_csv(runs_file)
    match = runs[runs["run_dir"].map(lambda path: Path(path).name) == folder.name]
    if match.empty:
        return False
    result = match.iloc[0].to_dict()
    histories = pd.read_csv(histories_file)
    if "run" in histories:  # published since runs carry their folder name
        history = histories[histories["run"] == folder.name]
    else:  # the first (Fashion-MNIST only) study: row, seed and warm-up name the run
        keys = histories[["row", "seed", "warmup_epochs"]]
        history = histories[(keys == [result["row"], result["seed"], result["warmup_epochs"]]).all(axis=1)]
    if history.empty:
        return False
    columns = [c for c in history.columns if c not in ("row", "seed", "warmup_epochs", "run", "dataset")]
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "metrics.csv") as tmp:
        history[columns].to_csv(tmp, index=False)
    source = runs_file.relative_to(project_root()) if runs_file.is_relative_to(project_root()) else runs_file
    result.update(run_dir=cache_relative(folder), adopted_from=str(source))
    atomic_write_json(folder / ROW_FILE, result)
    return True


def cache_relative(folder: Path) -> str:
    """``folder`` as the per-run table writes it: relative to the cache root (``$VITSTUDY_CACHE`` or
    ``data/cache``), so a committed table names no path of the machine that trained it; a run is found again by
    its folder name alone (:func:`adopt_committed`)."""
    folder = Path(folder)
    return folder.relative_to(cache_dir()).as_posix() if folder.is_relative_to(cache_dir()) else folder.name


def scratch_row(
    training: RowTraining, name: str, seed: int, drop_rate: float, progress: bool = False
) -> dict[str, Any]:
    """One (data set, row, seed): loaded from its ``row.json`` when it finished (here, or in the committed table),
    else trained (resuming) and saved."""
    row = SCRATCH_ROWS[name]
    training, warmup, folder = _row_run(training, name, drop_rate, seed)
    adopt_committed(folder, committed_tables(training.scale))
    if (folder / ROW_FILE).is_file():
        result = read_run_json(folder / ROW_FILE)
    else:
        result = train_row(training, name, row.settings, seed, warmup=warmup, progress=progress)
        result.pop("history")
        result.update(label=row.label, run_dir=cache_relative(folder))
        atomic_write_json(folder / ROW_FILE, result)
    # row.json files written before the paths became relative still hold this machine's absolute path
    result.update(dataset=training.train.dataset, run=folder.name, run_dir=cache_relative(folder))
    history = pd.read_csv(folder / "metrics.csv").assign(
        dataset=training.train.dataset, row=name, seed=seed, warmup_epochs=warmup, run=folder.name
    )
    return {**result, "history": history}


Run = tuple[str, str, int]  # (data set, row, seed)


def study_runs(budget: ScratchBudget, rows: tuple[str, ...] | None = None) -> list[Run]:
    """Every (data set, row, seed) of the study, seed-major (all rows of seed 0 on both data sets first, so an
    interrupted study already pairs rows with their baseline)."""
    return [
        (dataset, name, seed)
        for seed in budget.training.seeds
        for dataset in budget.study_datasets
        for name in rows_on(dataset, rows)
    ]


def _drop_rates(budget: ScratchBudget) -> dict[str, float]:
    return {
        dataset: matched_patch_drop_rate(budget, dataset=dataset)["patch_drop_rate"]
        for dataset in budget.study_datasets
    }


def missing_runs(budget: ScratchBudget, rows: tuple[str, ...] | None = None) -> list[Run]:
    """The (data set, row, seed) runs without a finished ``row.json`` here or a matching committed row."""
    rates, tables = _drop_rates(budget), committed_tables(budget.training.scale)
    missing = []
    for dataset, name, seed in study_runs(budget, rows):
        folder = _row_run(budget.training_on(dataset), name, rates[dataset], seed)[2]
        if not (folder / ROW_FILE).is_file() and not adopt_committed(folder, tables):
            missing.append((dataset, name, seed))
    return missing


default_workers = executors.default_workers  # the notebook calls it from here


def _train_in_worker(
    training: RowTraining, name: str, seed: int, drop_rate: float, environ: dict[str, str]
) -> tuple[str, str, int, float]:
    """Runs in a worker process: one (data set, row, seed) on one thread; returns its training minutes."""
    # A worker inherits its forkserver's or Ray node's environment, which may predate the caller's VITSTUDY_* settings.
    os.environ.update(environ)
    torch.set_num_threads(1)
    minutes = scratch_row(training, name, seed, drop_rate)["train_minutes"]
    return training.train.dataset, name, seed, minutes


def train_missing(
    budget: ScratchBudget,
    workers: int,
    rows: tuple[str, ...] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> None:
    """Train every missing (data set, row, seed) side by side, seed-major: in ``workers`` single-thread processes,
    or as one-CPU Ray tasks when ``$VITSTUDY_RAY`` says so (``local``, or a cluster's address: its nodes share this
    cache; :func:`vitstudy.executors.run_tasks`). A run killed half-way resumes from its last epoch."""
    order = missing_runs(budget, rows)
    if not order:
        return
    rates = _drop_rates(budget)
    ray = os.environ.get(executors.RAY_ENV) or None
    where = f"{workers} workers" if ray is None else f"Ray: {ray}"
    environ = {key: value for key, value in os.environ.items() if key.startswith("VITSTUDY_")}
    calls = [(budget.training_on(dataset), name, seed, rates[dataset], environ) for dataset, name, seed in order]
    start = time.monotonic()
    finished = executors.run_tasks(_train_in_worker, calls, workers, ray, preload=["torch", "timm", __name__])
    for done, (dataset, name, seed, minutes) in enumerate(finished, 1):
        log(
            f"{dataset} {name} seed {seed} trained in {minutes:.1f} min ({done}/{len(order)} runs, "
            f"{(time.monotonic() - start) / 60:.1f} min elapsed, {where})"
        )
    lost = missing_runs(budget, rows) if ray is not None else []
    if lost:  # else they would be trained again, one by one, on this machine
        raise FileNotFoundError(
            f"{len(lost)} runs trained on Ray ({ray}) are not in this machine's cache {cache_dir()}: the Ray nodes "
            "must write to the same folder (set VITSTUDY_CACHE to a disk they all share)"
        )


def scratch_runs(
    budget: ScratchBudget,
    rows: tuple[str, ...] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: None,
    workers: int = 1,
    train_missing_runs: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every (data set, row, seed), seed-major; returns (one results row per run, the per-epoch histories).
    Finished runs are only read; with ``workers`` > 1 (or on Ray) the missing ones are first trained side by side
    (:func:`train_missing`). ``train_missing_runs=False``: only the runs that finished (an interim look)."""
    if train_missing_runs and (workers > 1 or os.environ.get(executors.RAY_ENV)):
        train_missing(budget, workers, rows, log)
    rates = _drop_rates(budget)
    missing = set() if train_missing_runs else set(missing_runs(budget, rows))
    results = []
    for dataset, name, seed in study_runs(budget, rows):
        if (dataset, name, seed) in missing:
            continue
        log(f"{dataset} {name} seed {seed}")
        results.append(scratch_row(budget.training_on(dataset), name, seed, rates[dataset], progress))
    if not results:
        return pd.DataFrame(), pd.DataFrame()
    histories = pd.concat([r.pop("history") for r in results], ignore_index=True)
    return pd.DataFrame(results), histories


# ----------------------------------------------------------------------------------------------------------
# Statistics: paired intervals, one verdict per claim, the figure

FIRST_STUDY_DATASET = "fashion_mnist"  # per-run tables published before the cluttered set have no dataset column


def with_dataset(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``dataset`` column (the first study's tables, Fashion-MNIST only, had none)."""
    return runs if "dataset" in runs else runs.assign(dataset=FIRST_STUDY_DATASET)


def scratch_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per data set and row: seeds, mean ± std of top-1 with dropping on and off at test time, and the paired
    difference to that data set's baseline (dropping on; and off) with its 95 % interval."""
    out = []
    for dataset, part in with_dataset(runs).groupby("dataset", sort=False):
        by_seed = {
            column: part.pivot(index="seed", columns="row", values=column)
            for column in ("top1_dropping_on", "top1_dropping_off")
        }
        baseline = by_seed["top1_dropping_on"].get("baseline", pd.Series(dtype=float))
        for name, mine in part.groupby("row", sort=False):
            record: dict[str, Any] = {
                "dataset": dataset,
                "row": name,
                "setting": mine["label"].iloc[0],
                "seeds": len(mine),
            }
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


NOT_RECORDED = "not recorded (trained before runs named their machine)"


def training_time(runs: pd.DataFrame) -> pd.DataFrame:
    """Per data set and machine a run was trained on (``trained_on``; older runs did not record it): runs, their
    summed and median training minutes. Minutes are wall time of each run's worker, so they include any pause."""
    frame = with_dataset(runs)
    machine = frame["trained_on"] if "trained_on" in frame else pd.Series(index=frame.index, dtype=object)
    frame = frame.assign(trained_on=machine.fillna(NOT_RECORDED))
    table = frame.groupby(["dataset", "trained_on"], sort=False)["train_minutes"].agg(
        runs="count", train_minutes="sum", median_minutes_per_run="median"
    )
    return table.reset_index().assign(train_hours=lambda t: t["train_minutes"] / 60)


# Each claim: (what, row, compared with, the paper's difference in points, the direction the paper claims).
CLAIMS = (
    ("6 / 55% / skip 11 keeps the baseline's top-1", HEADLINE, "baseline", -0.01, "none"),
    ("fused token 6 / 45% loses top-1 against the baseline", "fused_6_45", "baseline", -1.78, "worse"),
    ("skip 6 / 55% beats the fused token 6 / 45%", HEADLINE, "fused_6_45", 1.77, "better"),
    ("warm-up (15% of epochs) helps 4,7 / 30% / skip 10", "skip_4_7_30_s10_warmup", "skip_4_7_30_s10", 2.55, "better"),
    ("ours: the skip beats plain dropping at 6 / 55%", HEADLINE, "drop_6_55", math.nan, "better"),
    (
        "ours: [CLS]-ranked skip beats timm's random PatchDropout at equal FLOPs",
        HEADLINE,
        "patch_dropout",
        math.nan,
        "better",
    ),
)
NO_LOSS_MARGIN = 1.0  # points: "keeps top-1" is reproduced when a loss larger than this is excluded
# A t interval from 2 pairs is valid but its spread is one number: two runs that happen to agree give a narrow
# interval by chance (an interim look at the cluttered study read "reproduced" from 2 seeds). So a verdict needs 3.
MIN_PAIRS_FOR_VERDICT = 3


def verdict(low: float, high: float, direction: str, paper: float = math.nan, pairs: int | None = None) -> str:
    """reproduced / contradicted / cannot tell, from a 95 % interval of (row − reference) in points over ``pairs``
    paired seeds (None: as many as the interval needs).

    A claimed direction is judged first. Where the interval spans zero, the paper's own difference ``paper`` can
    still be told: lying outside the interval, the paper's size is contradicted (at this scale) even though the
    sign is not resolved."""
    if math.isnan(low):
        return "cannot tell (fewer than 2 seeds)"
    if pairs is not None and pairs < MIN_PAIRS_FOR_VERDICT:
        return f"cannot tell (only {pairs} seeds; a verdict needs {MIN_PAIRS_FOR_VERDICT})"
    if direction == "none":
        if high < 0:
            return "contradicted (a loss)"
        return "reproduced" if low > -NO_LOSS_MARGIN else f"cannot tell (a loss up to {-low:.2f} not excluded)"
    sign = 1 if direction == "better" else -1
    if sign * low > 0 and sign * high > 0:
        return "reproduced"
    if sign * low < 0 and sign * high < 0:
        return "contradicted (the opposite)"
    if not math.isnan(paper) and not low <= paper <= high:
        return f"contradicted in size (the paper's {paper:+.2f} lies outside the interval; the sign is not resolved)"
    return "cannot tell at this scale"


RESOLVABLE_TARGET = 1.0  # points: the protocol should tell a difference of one point from zero on every claim


def claim_verdicts(runs: pd.DataFrame) -> pd.DataFrame:
    """One line per data set and claim (the paper's and two of ours) whose two rows both trained: our paired
    difference with its 95 % interval, the smallest difference this protocol resolves (the interval's
    half-width), and the verdict. Top-1 with dropping on."""
    out = []
    for dataset, part in with_dataset(runs).groupby("dataset", sort=False):
        by_seed = part.pivot(index="seed", columns="row", values="top1_dropping_on")
        for claim, row, reference, paper, direction in CLAIMS:
            if not {row, reference} <= set(by_seed.columns):
                continue
            paired = paired_difference(by_seed[row], by_seed[reference])
            told = verdict(paired["diff_low"], paired["diff_high"], direction, paper, paired["pairs"])
            out.append(
                {
                    "dataset": dataset,
                    "claim": claim,
                    "row": row,
                    "compared_with": reference,
                    "paper_diff": paper,
                    **paired,
                    "verdict": told,
                    "seeds_to_resolve": seeds_to_resolve(paired, direction) if told.startswith("cannot") else math.nan,
                }
            )
    return pd.DataFrame(out)


def scratch_plot(runs: pd.DataFrame, summary: pd.DataFrame, dataset: str = FIRST_STUDY_DATASET) -> Figure:
    """One data set. Left: test top-1 (dropping on) of every seed and the row mean. Right: paired difference to
    the baseline with its 95 % interval, dropping on (filled) and off (open) at test time."""
    runs = with_dataset(runs)
    runs, summary = runs[runs["dataset"] == dataset], summary[summary["dataset"] == dataset]
    fig = new_figure((11, 4.2))
    left, right = fig.subplots(1, 2)
    y = np.arange(len(summary))
    for i, name in enumerate(summary["row"]):
        seeds = runs[runs["row"] == name]["top1_dropping_on"].to_numpy(dtype=float)
        left.scatter(seeds, np.full(len(seeds), i), color="tab:gray", s=14, zorder=2)
    left.errorbar(
        summary["top1_dropping_on"],
        y,
        xerr=summary["top1_dropping_on_std"].fillna(0),
        fmt="D",
        color="tab:blue",
        capsize=3,
        label="mean ± std over seeds",
    )
    left.set_yticks(y, summary["setting"], fontsize=7)
    left.invert_yaxis()
    left.set(xlabel="test top-1 (%), dropping on", title="every seed (grey) and the mean")
    left.grid(axis="x", alpha=0.3)
    left.legend(fontsize=7)
    for tag, offset, face in (("on", -0.12, "tab:orange"), ("off", 0.12, "none")):
        diff = summary[f"diff_{tag}"].to_numpy(dtype=float)
        low = diff - summary[f"diff_low_{tag}"].to_numpy(dtype=float)
        high = summary[f"diff_high_{tag}"].to_numpy(dtype=float) - diff
        right.errorbar(
            diff,
            y + offset,
            xerr=[np.nan_to_num(low), np.nan_to_num(high)],
            fmt="o",
            capsize=3,
            color="tab:orange",
            mfc=face,
            label=f"dropping {tag} at test",
        )
    right.axvline(0, color="black", lw=0.8)
    right.set_yticks(y, [""] * len(y))
    right.invert_yaxis()
    right.set(xlabel="minus baseline (points), paired by seed, 95% interval", title="difference to the baseline")
    right.grid(axis="x", alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle(DATASET_TITLES.get(dataset, dataset), fontsize=10)
    return fig


DATASET_TITLES = {
    "fashion_mnist": "Fashion-MNIST (items on black)",
    "fashion_mnist_cluttered": "cluttered Fashion-MNIST (items among fragments of other items)",
}


# ----------------------------------------------------------------------------------------------------------
# What this run shows


def findings(verdicts: pd.DataFrame, finished: int | None = None, planned: int | None = None) -> str:
    """What notebook 08 shows (Markdown): per data set the claims grouped by verdict (reproduced, contradicted, not
    resolved with the seeds that would tell it), then how many claims this run reproduces and whether it resolves a
    difference of one point; the numbers stay in the verdicts table. ``finished`` of ``planned`` runs: an interim
    look."""
    interim = ""
    if finished is not None and planned is not None and finished < planned:
        interim = f"Interim: {finished} of {planned} runs have finished; every number below may still move."
    if verdicts.empty:
        return paragraph(
            [
                interim,
                "Do SkipViT's accuracy claims hold when every row trains from scratch? This run "
                "has no claim with both of its rows trained.",
            ]
        )
    sentences = [interim, "Do SkipViT's accuracy claims hold when every row trains from scratch, over seeds?"]
    for dataset, part in with_dataset(verdicts).groupby("dataset", sort=False):
        groups: dict[str, list[str]] = {"reproduced": [], "contradicted": [], "not resolved": []}
        for row in part.to_dict("records"):
            verdict = str(row["verdict"])
            kind = next((k for k in ("reproduced", "contradicted") if verdict.startswith(k)), "not resolved")
            more = row.get("seeds_to_resolve")
            detail = f" (about {int(more)} seeds would tell it)" if not is_missing(more) else ""
            if kind == "not resolved" and not detail and "(" in verdict:
                detail = f" ({verdict.split('(', 1)[1].rstrip(')')})"
            groups[kind].append(f"{row['claim']}{detail}")
        # Claims hold commas of their own: a kind's claims are joined by semicolons, kinds are sentences.
        listed = " ".join(f"{kind.capitalize()}: {'; '.join(claims)}." for kind, claims in groups.items() if claims)
        seeds = int(part["pairs"].max())
        reproduced, contradicted = len(groups["reproduced"]), len(groups["contradicted"])
        resolvable = part["resolvable"].dropna()
        widest = ""
        if len(resolvable):
            within = "within" if resolvable.max() <= RESOLVABLE_TARGET else "not within"
            widest = (
                f", resolving differences of {number(resolvable.min(), unit=' points')} to "
                f"{number(resolvable.max(), unit=' points')} ({within} the 1-point target)"
            )
        sentences.append(
            f"On {DATASET_TITLES.get(dataset, dataset)}, with {seeds} seed{'s' if seeds != 1 else ''} per row, this "
            f"run reproduces {reproduced} and contradicts {contradicted} of {len(part)} claims{widest}. {listed}"
        )
    sentences.append("Each claim's numbers are in the verdicts table (08_verdicts).")
    return paragraph(sentences)
