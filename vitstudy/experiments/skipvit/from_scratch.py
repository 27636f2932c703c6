"""Notebook 08: SkipViT's accuracy claims trained from scratch, with seeds (the ``scratch`` protocol): the runs.

Two data sets, one recipe, every row trained from random weights with each of six seeds. On Fashion-MNIST seven
rows: the baseline; EViT's fused token 6 / 45 % (EViT's computation: in block 6 after the attention, raw
weights); plain dropping 6 / 55 % (no skip: isolates what the skip buys); the headline 6 / 55 % / skip 11;
4,7 / 30 %,30 % / skip 10 with and without warm-up (15 % of the epochs, Table 3); and timm's own PatchDropout
(``patch_drop_rate``: random patches dropped at the input of every block during training, all kept at test) at
the rate whose training FLOPs match the headline row's. On cluttered Fashion-MNIST (:mod:`vitstudy.cluttered`,
where the background is fragments of other items, not black) the five rows that separate the methods.

Every (data set, row, seed) is its own resumable run in the cache (``data/cache/skipvit/``): :func:`scratch_runs`
loads the runs that finished (``row.json``), takes a run this machine never trained from the committed per-run
table (``figures/scratch/tables/08_runs.csv`` and its histories) when the run's folder name — the fingerprint of
its recipe, SkipViT settings, warm-up and seed — matches, resumes the one that was interrupted and trains only
what is missing. The statistics (paired intervals, verdicts, the figure) are :mod:`.from_scratch_stats`.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ... import bench
from ...cluttered import on_cluttered
from ...config import SCALES, Scale
from ...data import build_splits
from ...files import atomic_path, atomic_write_json, project_root
from ...skipvit import BASELINE, EXTRA, HEADLINE, TABLE1, TABLE3, SkipViTSettings, apply_skipvit, configure, flop_gain
from ...train import default_model_factory
from .skipvit_runs import RowTraining, budget_for, run_dir, train_row

ROW_FILE = "row.json"  # one finished run's results row, so aggregating needs no re-evaluation


STUDY_DATASETS = ("fashion_mnist", "fashion_mnist_cluttered")


@dataclass(frozen=True)
class ScratchBudget:
    """How notebook 08 trains: ``scratch`` (the protocol, ~6 h on a 2-core CPU) or ``smoke`` (seconds)."""

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
                SCALES["smoke"].train, train_size=128, val_size=64, test_size=128, epochs=2, batch_size=32
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


def matched_patch_drop_rate(budget: ScratchBudget, row: str = HEADLINE, dataset: str | None = None) -> dict[str, float]:
    """timm ``patch_drop_rate`` whose training-forward FLOPs per image come closest to ``row``'s, on ``dataset``'s
    model (default: the recipe's own data set).

    timm keeps ``int(L · (1 - rate))`` of L patches; the rate returned keeps exactly the best count (half a
    patch above it, so that the float product cannot round down to one fewer).
    """
    cfg = budget.training_on(dataset or budget.training.train.dataset).train
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
    result.update(run_dir=str(folder), adopted_from=str(source))
    atomic_write_json(folder / ROW_FILE, result)
    return True


def scratch_row(
    training: RowTraining, name: str, seed: int, drop_rate: float, progress: bool = False
) -> dict[str, Any]:
    """One (data set, row, seed): loaded from its ``row.json`` when it finished (here, or in the committed table),
    else trained (resuming) and saved."""
    row = SCRATCH_ROWS[name]
    training, warmup, folder = _row_run(training, name, drop_rate, seed)
    adopt_committed(folder, committed_tables(training.scale))
    if (folder / ROW_FILE).is_file():
        result = json.loads((folder / ROW_FILE).read_text())
    else:
        result = train_row(training, name, row.settings, seed, warmup=warmup, progress=progress)
        result.pop("history")
        result.update(label=row.label, run_dir=str(folder))
        atomic_write_json(folder / ROW_FILE, result)
    result.update(dataset=training.train.dataset, run=folder.name)
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


def default_workers() -> int:
    """Processes that train the study side by side: one single-thread process per core on a CPU, one on a GPU.

    On a shared 2-core VM a 2-thread training process collapses whenever anything else runs (measured: ~23 im/s
    against ~197 im/s for one thread of the scratch model), while one single-thread process per core does not.
    """
    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


def _train_in_worker(
    training: RowTraining, name: str, seed: int, drop_rate: float, environ: dict[str, str]
) -> tuple[str, str, int, float]:
    """Runs in a worker process: one (data set, row, seed) on one thread; returns its training minutes."""
    # A forkserver child inherits the server's environment, which may predate the caller's VITSTUDY_* settings.
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
    """Train every missing (data set, row, seed) in ``workers`` single-thread processes, seed-major. A run killed
    half-way resumes from its last epoch."""
    order = missing_runs(budget, rows)
    if not order:
        return
    rates = _drop_rates(budget)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "timm", __name__])
    start = time.monotonic()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        environ = {key: value for key, value in os.environ.items() if key.startswith("VITSTUDY_")}
        futures = [
            pool.submit(_train_in_worker, budget.training_on(dataset), name, seed, rates[dataset], environ)
            for dataset, name, seed in order
        ]
        for done, future in enumerate(as_completed(futures), 1):
            dataset, name, seed, minutes = future.result()
            log(
                f"{dataset} {name} seed {seed} trained in {minutes:.1f} min ({done}/{len(order)} runs, "
                f"{(time.monotonic() - start) / 60:.1f} min elapsed, {workers} workers)"
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
    Finished runs are only read; with ``workers`` > 1 the missing ones are first trained side by side
    (:func:`train_missing`). ``train_missing_runs=False``: only the runs that finished (an interim look)."""
    if workers > 1 and train_missing_runs:
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
