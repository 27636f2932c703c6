"""Notebook 11, second half: the token rules at equal cost after fine-tuning, over seeds (the ``scratch`` protocol).

The off-the-shelf curve (:mod:`.token_rules`) asks what each rule keeps when the baseline never saw its tokens gone.
Here every rule is trained with them gone: each (data set, rule, level, seed) fine-tunes the trained baseline's
weights for the same short budget with the rule acting in every training forward, beside the baseline fine-tuned the
same way with no rule (one per data set and seed), and is evaluated on the same test images with the rule on (as
trained) and off (all tokens).

- **Rules and levels** come from :mod:`.token_rules` (:func:`~.token_rules.solve_levels`, :func:`~.token_rules.
  build_arm`): every rule at the same three FLOP-ideal levels :data:`TRAINED_LEVELS`, each within
  :data:`~.token_rules.LEVEL_TOLERANCE`. The levels stop at 1.45× because SkipViT's skip at the paper's layers
  (drop after block 6, back at block 11: only blocks 7-10 see fewer tokens) reaches 1.47× at most with every patch
  skipped; the three levels are spread evenly below that so that every rule is compared at every level. A rule
  acts in training as at test (SkipViT's patch and ToMe's merge drop and merge in both modes; PatchDropout removes
  the same number of random patches in training, a fixed seeded draw at test), so the token counts the levels are
  solved on are the training forward's too.
- **Runs** are cached in ``data/cache/token_rules_trained/``, one folder per run named by the fine-tuning recipe's
  :func:`vitstudy.train.config_fingerprint` (seed included) and :func:`vitstudy.files.fingerprint` of the rule,
  its parameter, the baseline it starts from and the test images: a finished run's ``row.json`` is read, an
  interrupted one resumes from its last epoch (:func:`vitstudy.train.train`), the missing ones train side by side
  in single-thread workers or as Ray tasks (:func:`vitstudy.executors.run_tasks`, ``$VITSTUDY_RAY``), as notebook
  08's runs do. A run this machine never trained is taken from the committed per-run table when a row there was
  trained in a folder of the same name (:func:`adopt_committed`).
- **Training-step speed** is a separate step (:func:`training_speed_table`), timed later on a quiet machine: one
  :func:`vitstudy.bench.compare` per data set of one training step (random batch) of the baseline, every (rule,
  level) and the baseline's A/A copy, each arm rebuilt from a module-level factory (:func:`rule_training_step`).
  The FLOP ideal of a training step counts 3 × the forward's FLOPs for every arm, so it equals the forward's
  FLOP ideal of the level (:meth:`vitstudy.bench.BaselineWork.training_step`).
- **Statistics**: per (data set, level, rule) the mean top-1 with the rule on and its paired difference to the
  baseline fine-tuned the same way (:func:`vitstudy.experiments.seeds.paired_difference`, a paired t over seeds);
  per (data set, level) the best rule and whether its lead over the runner-up is resolved
  (:func:`vitstudy.verdicts.accuracy_verdict`: "higher", or "no difference resolved" with the seeds that would
  resolve it, :func:`vitstudy.experiments.seeds.seeds_to_resolve`).

How it runs, like notebook 08: the protocol is the ``scratch`` scale of notebook 11 (``python -m vitstudy report
--scale scratch --only 11`` times the training steps, aggregates and publishes to ``figures/scratch/tables/``);
``python -m vitstudy trained_rules --workers 2`` only trains the missing runs (resumable, no timing), so that the
long part runs in the background and the timing on a quiet machine afterwards. At ``quick`` and ``full`` notebook 11
shows the committed tables of the scratch run; ``smoke`` runs everything tiny.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from .. import bench, executors, train
from ..checkpoint import load_weights, read_checkpoint_index, read_run_json
from ..cluttered import CANVAS, ITEM, on_cluttered
from ..config import SCALES, Scale, TrainConfig, check_choice, scale_budget
from ..data import make_loader
from ..files import atomic_write_json, cache_dir, fingerprint, project_root
from ..models import create_model
from ..plots import new_figure
from ..steps import evaluate, random_batch_step
from ..verdicts import MOST_SEEDS, accuracy_verdict
from . import token_rules
from .seeds import paired_difference, seeds_to_resolve
from .sentences import is_missing, number, paragraph, points

RULES, DATASETS, BASELINE = token_rules.RULES, token_rules.DATASETS, token_rules.BASELINE
# Skip at the paper's layers tops out at 1.47x (module docstring): three levels evenly spread below it.
TRAINED_LEVELS = (1.15, 1.3, 1.45)
ROW_FILE = "row.json"  # one finished run's results row, so aggregating needs no re-evaluation
RUNS_TABLE = "11_trained_runs"  # the per-run table the scratch report publishes (and adopt_committed reads)
STUDY_SCALE = "scratch"
CLASSES = 10  # both data sets: Fashion-MNIST's ten classes


@dataclass(frozen=True)
class TrainedBudget:
    """How the trained curve fine-tunes, evaluates and times at one scale."""

    scale: str  # names the runs' folders and where the tables are published
    baseline_scale: str  # whose baselines every run starts from: notebook 00's and token_rules' cluttered one
    finetune: TrainConfig  # the recipe on Fashion-MNIST; the cluttered runs take it through on_cluttered
    seeds: tuple[int, ...]
    timing: bench.CompareSettings
    timing_batch: int  # the batch one timed training step trains on
    levels: tuple[float, ...] = TRAINED_LEVELS
    rules: tuple[str, ...] = tuple(RULES)
    datasets: tuple[str, ...] = tuple(DATASETS)
    note: str = ""
    # Processes that train the runs side by side; None: one per core (executors.default_workers). Smoke trains in
    # the notebook's own process: starting workers costs more than its tiny runs (the pool has its own test).
    workers: int | None = None

    @property
    def train_workers(self) -> int:
        return self.workers or executors.default_workers()

    def recipe(self, dataset: str) -> TrainConfig:
        """The fine-tuning recipe on ``dataset``: the cluttered canvases take the patch-8 model of its baseline."""
        check_choice("dataset", dataset, tuple(DATASETS))
        return on_cluttered(self.finetune) if dataset == "fashion_mnist_cluttered" else self.finetune


BUDGETS: dict[str, TrainedBudget] = {
    "smoke": TrainedBudget(
        "smoke",
        "smoke",
        dataclasses.replace(
            SCALES["smoke"].train, train_size=32, val_size=16, test_size=32, epochs=1, batch_size=32, lr=5e-4
        ),
        seeds=(0, 1),
        timing=bench.SMOKE_ONE_CALL_TIMING,
        timing_batch=8,
        levels=(1.3,),
        rules=("skip", "tome"),
        datasets=("fashion_mnist",),
        note="smoke: two rules at one level, two seeds, Fashion-MNIST only, tiny data; numbers meaningless",
        workers=1,
    ),
    # 2 data sets x (5 rules x 3 levels + the baseline) x 6 seeds = 192 runs, sized to finish within 45 minutes on
    # two single-thread workers of a 2-core CPU (about 25 s a run): each run fine-tunes the quick baseline on 2,000
    # training images for one epoch (a quarter of the lr the baseline trained with, a short warm-up) and is
    # evaluated on 1,000 test images twice (rule on, rule off). The training steps are timed at batch 64 (the
    # recipe's).
    STUDY_SCALE: TrainedBudget(
        STUDY_SCALE,
        "quick",
        dataclasses.replace(
            SCALES["quick"].train,
            train_size=2_000,
            val_size=250,
            test_size=1_000,
            epochs=1,
            lr=5e-4,
            warmup_epochs=0.2,
        ),
        seeds=(0, 1, 2, 3, 4, 5),
        timing=bench.CompareSettings(rounds=7, min_run_time=0.4, warmup_calls=2),
        timing_batch=64,
        note="scratch: every rule at 1.15x, 1.3x and 1.45x FLOP ideal fine-tuned from the quick baselines on 2,000 "
        "images x 1 epoch, six seeds, top-1 on 1,000 test images",
    ),
}


def budget(scale: Scale | str | None = None) -> TrainedBudget:
    """The trained curve's budget: ``scratch`` (the protocol) or ``smoke`` (CI); any other scale is refused (it
    shows the committed scratch tables, :func:`committed`)."""
    return scale_budget(BUDGETS, scale)


def baseline_budget(chosen: TrainedBudget) -> token_rules.TokenRulesBudget:
    """The off-the-shelf budget whose baselines the runs start from (its cluttered recipe among them)."""
    return token_rules.budget(chosen.baseline_scale)


# ----------------------------------------------------------------------------------------------------------
# The runs


@dataclass(frozen=True)
class TrainedArm:
    """One arm of the protocol on one data set: the baseline fine-tuned with no rule, or a rule at a level."""

    rule: str
    level: float
    parameter: int | tuple[int, ...] | None
    label: str
    ideal: float

    @property
    def name(self) -> str:
        """The arm's name in the timed comparison and the tables: ``"baseline"`` or ``"tome 1.30×"``."""
        return BASELINE if self.rule == BASELINE else f"{self.rule} {self.level:.2f}×"


def start_model(dataset: str, chosen: TrainedBudget) -> train.TrainResult:
    """The trained baseline a data set's runs start from (trained once into the cache, then loaded)."""
    return token_rules.trained_baseline(dataset, baseline_budget(chosen))


def start_dir(dataset: str, chosen: TrainedBudget) -> Path:
    """The cache folder of the trained baseline a data set's runs start from."""
    chosen_baselines = baseline_budget(chosen)
    if dataset == "fashion_mnist":
        return train.baseline_run_dir(SCALES[chosen.baseline_scale])
    return token_rules.cluttered_run_dir(chosen_baselines.scale, chosen_baselines.cluttered)


def start_weights(dataset: str, chosen: TrainedBudget) -> dict[str, torch.Tensor]:
    """The baseline's weights, read from its checkpoint (trained first when missing): a run needs no more of the
    baseline, so it does not rebuild the baseline's data splits."""
    folder = start_dir(dataset, chosen)
    if not (folder / train.FINAL_FILE).is_file():
        start_model(dataset, chosen)
    index = read_checkpoint_index(folder)
    return load_weights(folder / index["weights"])


def input_size(dataset: str) -> tuple[int, int, int]:
    """One image of ``dataset``: Fashion-MNIST's 28x28, or the cluttered 56x56 canvas (one channel each)."""
    side = CANVAS if dataset == "fashion_mnist_cluttered" else ITEM
    return (1, side, side)


def plain_model(cfg: TrainConfig, image_size: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A fresh model of ``cfg``'s architecture, as :func:`vitstudy.train.default_model_factory` builds it, from the
    input size and classes alone (so a timing process need not build the data splits)."""
    channels, height, width = image_size
    kwargs: dict[str, Any] = dict(num_classes=num_classes, drop_path_rate=cfg.drop_path)
    return create_model(cfg.model, **{**kwargs, "in_chans": channels, "img_size": (height, width), **cfg.model_kwargs})


def trained_arms(model: nn.Module, chosen: TrainedBudget) -> list[TrainedArm]:
    """The baseline and every rule of ``chosen`` at each of its levels on ``model`` (levels solved on the token
    counts every block sees, :func:`.token_rules.solve_levels`)."""
    arms = [TrainedArm(BASELINE, 1.0, None, "no token removed", 1.0)]
    for rule in chosen.rules:
        for level in token_rules.solve_levels(model, rule, chosen.levels):
            arms.append(TrainedArm(rule, level.target, level.parameter, level.label, level.ideal))
    return arms


# (data set, architecture, levels, rules) -> its arms: solving every level walks every candidate of every rule
_ARMS: dict[str, list[TrainedArm]] = {}


def arms_on(dataset: str, chosen: TrainedBudget) -> list[TrainedArm]:
    """:func:`trained_arms` on ``dataset``'s architecture (no data and no baseline needed: the levels depend on the
    model's shape alone); solved once per process."""
    cfg = chosen.recipe(dataset)
    key = fingerprint([dataset, cfg.model, cfg.model_kwargs, chosen.levels, chosen.rules])
    if key not in _ARMS:
        _ARMS[key] = trained_arms(plain_model(cfg, input_size(dataset), CLASSES), chosen)
    return _ARMS[key]


Run = tuple[str, str, float, int]  # (data set, rule, level, seed); the baseline's level is 1.0


def study_runs(chosen: TrainedBudget) -> list[Run]:
    """Every (data set, rule, level, seed), seed-major: an interrupted protocol already pairs arms with their
    baseline."""
    return [
        (dataset, arm.rule, arm.level, seed)
        for seed in chosen.seeds
        for dataset in chosen.datasets
        for arm in arms_on(dataset, chosen)
    ]


def _arm(dataset: str, rule: str, level: float, chosen: TrainedBudget) -> TrainedArm:
    return next(a for a in arms_on(dataset, chosen) if a.rule == rule and a.level == level)


def run_dir(dataset: str, arm: TrainedArm, seed: int, chosen: TrainedBudget) -> Path:
    """Cache folder of one run: the recipe's fingerprint (seed included) and a fingerprint of the rule, its
    parameter and the baseline it starts from (its own folder name holds that baseline's recipe)."""
    cfg = dataclasses.replace(chosen.recipe(dataset), seed=seed)
    start = start_dir(dataset, chosen).name
    parameter = list(arm.parameter) if isinstance(arm.parameter, tuple) else arm.parameter
    tag = fingerprint([arm.rule, parameter, start], length=8)
    level = "1" if arm.rule == BASELINE else f"{arm.level:g}"
    name = f"{chosen.scale}-{dataset}-{arm.rule}-{level}-{train.config_fingerprint(cfg)}-{tag}-seed{seed}"
    return cache_dir() / "token_rules_trained" / name


def rule_model(model: nn.Module, rule: str, parameter: int | Sequence[int] | None) -> nn.Module:
    """A copy of ``model`` running ``rule`` (the baseline arm: a plain copy) in training and at test."""
    if rule == BASELINE:
        return model
    return token_rules.build_arm(model, rule, parameter)


def fine_tune(
    dataset: str, arm: TrainedArm, seed: int, chosen: TrainedBudget, progress: bool = False
) -> dict[str, Any]:
    """Fine-tune the baseline's weights with ``arm``'s rule acting in training (resuming an interrupted run), then
    evaluate on the test images with the rule on and off. Returns the run's results row."""
    cfg = dataclasses.replace(chosen.recipe(dataset), seed=seed)
    start = start_weights(dataset, chosen)

    def factory(cfg: TrainConfig, splits) -> nn.Module:
        model = train.default_model_factory(cfg, splits)
        model.load_state_dict(start)
        return rule_model(model, arm.rule, arm.parameter)

    folder = run_dir(dataset, arm, seed, chosen)
    result = train.train(cfg, folder, progress=progress, model_factory=factory)
    device = next(result.model.parameters()).device
    loader = make_loader(result.splits.test, cfg.batch_size * 2, train=False, num_workers=0)
    # On: the training loop's own test evaluation, the trained model in eval mode with its rule acting.
    on = result.metrics["test_top1"]
    # Off: the same weights in the plain model (no rule adds parameters, so the state dict loads strictly).
    plain = train.default_model_factory(cfg, result.splits)
    plain.load_state_dict(result.model.state_dict())
    off = evaluate(plain, loader, device)["top1"]
    return {
        "dataset": dataset,
        "rule": arm.rule,
        "level": arm.level,
        "arm": arm.name,
        "parameter": arm.label,
        "ideal_speedup": arm.ideal,
        "seed": seed,
        "top1_rule_on": on,
        "top1_rule_off": off,
        "val_top1": result.metrics["val_top1"],
        "epochs": cfg.epochs,
        "train_images": result.metrics["sizes"]["train"],
        "test_images": result.metrics["sizes"]["test"],
        "train_minutes": result.metrics["train_seconds"] / 60,
        "trained_on": bench.environment_info(device)["device_name"],
        "run": folder.name,
    }


def committed_tables(scale: str = STUDY_SCALE) -> Path:
    """Where the report publishes a study scale's tables: ``figures/<scale>/tables`` in the checkout."""
    return project_root() / "figures" / scale / "tables"


def adopt_committed(folder: Path, tables: Path) -> bool:
    """Fill ``folder`` (a run this machine never finished) from the committed per-run table when a row there was
    trained in a folder of the same name (the same recipe, rule, parameter, baseline and seed, so the same run).
    Writes only ``row.json`` in the cache; False when nothing matches."""
    runs_file = tables / f"{RUNS_TABLE}.csv"
    if (folder / ROW_FILE).is_file() or not runs_file.is_file():
        return False
    runs = pd.read_csv(runs_file)
    match = runs[runs["run"] == folder.name]
    if match.empty:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    row = {
        key: (None if is_missing(value) and not isinstance(value, str) else value)
        for key, value in match.iloc[0].items()
    }
    atomic_write_json(folder / ROW_FILE, {**row, "adopted_from": f"{RUNS_TABLE}.csv"})
    return True


def trained_run(
    dataset: str, rule: str, level: float, seed: int, chosen: TrainedBudget, progress: bool = False
) -> dict[str, Any]:
    """One run: read from its ``row.json`` when it finished (here, or in the committed table), else fine-tuned
    (resuming) and saved."""
    arm = _arm(dataset, rule, level, chosen)
    folder = run_dir(dataset, arm, seed, chosen)
    adopt_committed(folder, committed_tables(chosen.scale))
    if (folder / ROW_FILE).is_file():
        return read_run_json(folder / ROW_FILE)
    atomic_write_json(folder / ROW_FILE, fine_tune(dataset, arm, seed, chosen, progress))
    return read_run_json(folder / ROW_FILE)  # as a later call reads it: the same row whether trained now or before


def missing_runs(chosen: TrainedBudget) -> list[Run]:
    """The runs without a finished ``row.json`` here or a matching committed row."""
    tables = committed_tables(chosen.scale)
    missing = []
    for dataset, rule, level, seed in study_runs(chosen):
        folder = run_dir(dataset, _arm(dataset, rule, level, chosen), seed, chosen)
        if not (folder / ROW_FILE).is_file() and not adopt_committed(folder, tables):
            missing.append((dataset, rule, level, seed))
    return missing


default_workers = executors.default_workers  # the notebook calls it from here


def _train_in_worker(
    dataset: str, rule: str, level: float, seed: int, chosen: TrainedBudget, environ: dict[str, str]
) -> tuple[str, str, float, int, float]:
    """Runs in a worker process: one run on one thread; returns (its key, its training minutes)."""
    # A worker inherits its forkserver's or Ray node's environment, which may predate the caller's VITSTUDY_* settings.
    os.environ.update(environ)
    torch.set_num_threads(1)
    row = trained_run(dataset, rule, level, seed, chosen)
    return dataset, rule, level, seed, float(row["train_minutes"])


def train_missing(chosen: TrainedBudget, workers: int, log: Callable[[str], None] = lambda line: None) -> int:
    """Train every missing run side by side, seed-major: in ``workers`` single-thread processes, or as one-CPU Ray
    tasks when ``$VITSTUDY_RAY`` says so (:func:`vitstudy.executors.run_tasks`). The baselines are trained (or
    loaded) here first, so that no two workers train the same one. A run killed half-way resumes from its last
    epoch. Returns the runs trained."""
    order = missing_runs(chosen)
    if not order:
        return 0
    for dataset in chosen.datasets:
        start_model(dataset, chosen)
    ray = os.environ.get(executors.RAY_ENV) or None
    where = f"{workers} workers" if ray is None else f"Ray: {ray}"
    environ = {key: value for key, value in os.environ.items() if key.startswith("VITSTUDY_")}
    calls = [(*run, chosen, environ) for run in order]
    began = time.monotonic()
    finished = executors.run_tasks(_train_in_worker, calls, workers, ray, preload=["torch", "timm", __name__])
    for done, (dataset, rule, level, seed, minutes) in enumerate(finished, 1):
        log(
            f"{dataset} {rule} {level:g}x seed {seed} trained in {minutes:.1f} min ({done}/{len(order)} runs, "
            f"{(time.monotonic() - began) / 60:.1f} min elapsed, {where})"
        )
    lost = missing_runs(chosen) if ray is not None else []
    if lost:  # else they would be trained again, one by one, on this machine
        raise FileNotFoundError(
            f"{len(lost)} runs trained on Ray ({ray}) are not in this machine's cache {cache_dir()}: the Ray nodes "
            "must write to the same folder (set VITSTUDY_CACHE to a disk they all share)"
        )
    return len(order)


def trained_runs(
    chosen: TrainedBudget,
    workers: int = 1,
    log: Callable[[str], None] = lambda line: None,
    train_missing_runs: bool = True,
) -> pd.DataFrame:
    """Every run of the protocol, one row each, seed-major. Finished runs are only read; with ``workers`` > 1 (or
    on Ray) the missing ones are first trained side by side (:func:`train_missing`), else one by one here.
    ``train_missing_runs=False``: only the runs that finished (an interim look)."""
    if train_missing_runs and (workers > 1 or os.environ.get(executors.RAY_ENV)):
        train_missing(chosen, workers, log)
    missing = set() if train_missing_runs else set(missing_runs(chosen))
    rows = [trained_run(*run, chosen) for run in study_runs(chosen) if run not in missing]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------
# The training-step timing (a separate step: run it on a quiet machine)


def rule_training_step(
    cfg: TrainConfig,
    image_size: tuple[int, int, int],
    num_classes: int,
    rule: str,
    parameter: int | tuple[int, ...] | None,
    batch_size: int,
    device: str,
    seed: int = 0,
) -> Callable[[], torch.Tensor]:
    """One training step (:func:`vitstudy.steps.random_batch_step`) of ``cfg``'s model running ``rule``.

    Module-level so that :func:`vitstudy.bench.compare` can rebuild it in a fresh process; the seed gives every arm
    the same initial weights (a step's cost does not depend on them)."""
    torch.manual_seed(seed)
    model = rule_model(plain_model(cfg, image_size, num_classes), rule, parameter)
    return random_batch_step(model, batch_size, image_size, num_classes, device)


def training_speed_table(
    dataset: str, chosen: TrainedBudget, device: str | torch.device | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The measured training-step speed-up of every (rule, level) over the baseline on ``dataset``'s model, in one
    comparison with the baseline's A/A copy, beside its FLOP ideal (3 × forward FLOPs for every arm, so the level's
    forward ideal). Returns (one row per arm, the raw times)."""
    device = torch.device(device or bench.default_device())
    cfg, size = chosen.recipe(dataset), input_size(dataset)
    arms = arms_on(dataset, chosen)
    common = dict(cfg=cfg, image_size=size, num_classes=CLASSES, batch_size=chosen.timing_batch)
    steps = {
        arm.name: bench.ArmSpec(
            rule_training_step, dict(common, rule=arm.rule, parameter=arm.parameter, device=str(device))
        )
        for arm in arms
    }
    control = bench.control_arm(BASELINE)
    steps[control] = steps[BASELINE]
    forward = bench.flops_per_image(plain_model(cfg, size, CLASSES), size)
    work = bench.BaselineWork.training_step(forward)
    comparison = bench.compare(steps, BASELINE, control, chosen.timing, device, work=work)
    batch = chosen.timing_batch
    rows = []
    for arm in arms:
        if arm.rule == BASELINE:
            speed = bench.speed_row(comparison, BASELINE, batch, 1.0, (1.0, 1.0))
        else:
            speed = bench.speed_row(comparison, arm.name, batch, arm.ideal, bench.FLOP_IDEAL_TARGET)
        rows.append({"arm": arm.name, "rule": arm.rule, "level": arm.level, "parameter": arm.label, **speed})
    rows.append(
        {
            "arm": control,
            "rule": control,
            "level": 1.0,
            "parameter": "an identical copy of the baseline",
            **bench.control_row(comparison, batch),
        }
    )
    table = pd.DataFrame(rows).assign(
        dataset=dataset,
        batch_size=batch,
        training_flops_per_image=3 * forward,
        **bench.protocol(comparison),
        note=bench.table_note(comparison),
    )
    return table, bench.raw_times(comparison, dataset=dataset)


# ----------------------------------------------------------------------------------------------------------
# Statistics, verdicts, the figure


def trained_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (data set, level, rule): seeds, mean top-1 with the rule on and off, and the paired difference (rule on)
    to the baseline fine-tuned the same way, with its 95 % paired t interval. The baseline's own row comes first."""
    out = []
    for dataset, part in runs.groupby("dataset", sort=False):
        by_seed = part.pivot_table(index="seed", columns="arm", values="top1_rule_on")
        reference = by_seed[BASELINE] if BASELINE in by_seed else pd.Series(dtype=float)
        for arm, mine in part.groupby("arm", sort=False):
            first = mine.iloc[0]
            out.append(
                {
                    "dataset": dataset,
                    "arm": arm,
                    "rule": first["rule"],
                    "level": first["level"],
                    "parameter": first["parameter"],
                    "ideal_speedup": first["ideal_speedup"],
                    "seeds": len(mine),
                    "top1_rule_on": mine["top1_rule_on"].mean(),
                    "top1_rule_on_std": mine["top1_rule_on"].std(),
                    "top1_rule_off": mine["top1_rule_off"].mean(),
                    **paired_difference(by_seed[arm], reference),
                    "train_minutes": mine["train_minutes"].mean(),
                }
            )
    return pd.DataFrame(out)


def level_verdicts(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (data set, level): the rule with the best mean top-1 (rule on), the runner-up, the best's paired lead
    over the runner-up with its 95 % interval, and the verdict: "higher" (the lead is resolved) or "no difference
    resolved" with the seeds that would resolve it (:func:`vitstudy.verdicts.accuracy_verdict`)."""
    out = []
    rules = runs[runs["rule"] != BASELINE]
    for (dataset, level), part in rules.groupby(["dataset", "level"], sort=False):
        by_seed = part.pivot_table(index="seed", columns="rule", values="top1_rule_on")
        ranked = by_seed.mean().sort_values(ascending=False)
        if len(ranked) < 2:
            continue
        best, second = ranked.index[0], ranked.index[1]
        paired = paired_difference(by_seed[best], by_seed[second])
        seeds = seeds_to_resolve(paired, "better")
        needed = None if is_missing(seeds) else int(seeds)
        told = accuracy_verdict(paired["diff"], paired["diff_low"], paired["diff_high"], math.nan, needed)
        out.append(
            {
                "dataset": dataset,
                "level": level,
                "best": best,
                "best_top1": ranked.iloc[0],
                "runner_up": second,
                "runner_up_top1": ranked.iloc[1],
                "lead": paired["diff"],
                "lead_low": paired["diff_low"],
                "lead_high": paired["diff_high"],
                "pairs": paired["pairs"],
                "verdict": "resolved" if told == "higher" else f"cannot tell: {told}",
                "seeds_to_resolve": seeds if told != "higher" else math.nan,
            }
        )
    return pd.DataFrame(out)


def with_speed(summary: pd.DataFrame, speed: pd.DataFrame | None) -> pd.DataFrame:
    """``summary`` with the measured training-step speed-up (and its interval) of every arm of its data set from
    the timed table ``speed`` (NaN where not timed yet)."""
    columns = ["speedup", "speedup_low", "speedup_high"]
    if speed is None or speed.empty:
        return summary.assign(**{column: math.nan for column in columns})
    return summary.merge(speed[["dataset", "arm", *columns]], on=["dataset", "arm"], how="left")


def curves_plot(summary: pd.DataFrame, dataset: str) -> Figure:
    """One data set: mean top-1 (rule on) after fine-tuning against the measured training-step speed-up, one curve
    per rule from the fine-tuned baseline on; vertical bars the paired 95 % interval against the baseline, horizontal
    bars the speed-up's; faint crosses at each level's FLOP ideal. Untimed arms stand at their FLOP ideal."""
    rows = summary[summary["dataset"] == dataset]
    fig = new_figure((7.5, 4.8))
    ax = fig.add_subplot()
    base = rows[rows["rule"] == BASELINE]
    base_top1 = float(base["top1_rule_on"].iloc[0]) if len(base) else math.nan
    timed = rows["speedup"].notna().any() if "speedup" in rows else False
    for index, (rule, name) in enumerate(RULES.items()):
        mine = rows[rows["rule"] == rule].sort_values("level")
        if mine.empty:
            continue
        color = f"C{index}"
        x = mine["speedup"] if timed else mine["ideal_speedup"]
        y = base_top1 + mine["diff"].fillna(0) if len(base) else mine["top1_rule_on"]
        ax.plot([1.0, *x], [base_top1, *y], "-", color=color, alpha=0.8)
        yerr = [
            (mine["diff"] - mine["diff_low"]).fillna(0).clip(lower=0),
            (mine["diff_high"] - mine["diff"]).fillna(0).clip(lower=0),
        ]
        xerr = None
        if timed:
            xerr = [
                (mine["speedup"] - mine["speedup_low"]).fillna(0).clip(lower=0),
                (mine["speedup_high"] - mine["speedup"]).fillna(0).clip(lower=0),
            ]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=color, capsize=2, label=name)
        ax.scatter(mine["ideal_speedup"], y, marker="x", color=color, alpha=0.3)
    ax.scatter([1.0], [base_top1], marker="*", s=120, color="black", zorder=3, label="baseline fine-tuned alike")
    how = "measured" if timed else "FLOP ideal (not timed yet)"
    ax.set_xlabel(f"training-step speed-up over the baseline, {how} (×; faint crosses: FLOP ideal)")
    ax.set_ylabel("test top-1 (%), rule on; bars: paired 95% interval")
    ax.set_title(f"{DATASETS.get(dataset, dataset)}: every rule fine-tuned with its tokens gone")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


# ----------------------------------------------------------------------------------------------------------
# The closing


def findings(tables: Mapping[str, pd.DataFrame], planned: int | None = None) -> str:
    """What the trained curve shows, in sentences from its tables (:func:`run_protocol`'s or :func:`committed`'s):
    per data set and level the best rule after fine-tuning, its difference to the baseline fine-tuned alike, and
    whether its lead over the runner-up is resolved (or the seeds that would resolve it); the measured training-step
    speed-up where timed and trustworthy. ``planned`` runs, more than have finished: an interim look."""
    runs = tables.get(RUNS_TABLE, pd.DataFrame())
    summary = tables.get(SUMMARY_TABLE, pd.DataFrame())
    verdicts = tables.get(VERDICTS_TABLE, pd.DataFrame())
    interim = ""
    if planned is not None and len(runs) < planned:
        interim = f"Interim: {len(runs)} of {planned} runs have finished; every number below may still move."
    question = "Which rule keeps the most top-1 at equal cost once it is fine-tuned with its tokens gone?"
    if verdicts.empty:
        return paragraph([interim, question, "This run has no level with two rules trained."])
    sentences = [interim, question]
    for dataset, part in verdicts.groupby("dataset", sort=False):
        mine = summary[summary["dataset"] == dataset].set_index("arm")
        speed_table = tables.get(speed_table_name(str(dataset)), pd.DataFrame())
        trust = bench.table_trust(speed_table) if len(speed_table) else ""
        seeds = int(part["pairs"].max())
        said = []
        for row in part.to_dict("records"):
            arm = f"{row['best']} {row['level']:.2f}×"
            change = mine["diff"].get(arm, math.nan)
            speed = mine["speedup"].get(arm, math.nan) if "speedup" in mine else math.nan
            timed = f", measured training step {number(speed)}×" if not (is_missing(speed) or trust) else ""
            lead = points(row["lead"], row["lead_low"], row["lead_high"])
            if row["verdict"] == "resolved":
                told = "resolved"
            else:
                more = row["seeds_to_resolve"]
                if is_missing(more):
                    told = "not resolved"
                elif more >= MOST_SEEDS:
                    told = f"not resolved; {MOST_SEEDS} or more seeds would tell"
                else:
                    told = f"not resolved; about {int(more)} seeds would tell"
            said.append(
                f"at {row['level']:.2f}× FLOP ideal{timed}, {RULES[row['best']]}: it {points(change)} against the "
                f"baseline fine-tuned alike and {lead} against {RULES[row['runner_up']]}, the runner-up ({told})"
            )
        caveat = f" Its training-step timing is {trust}, so only the FLOP ideals are read." if trust else ""
        sentences.append(
            f"On {DATASETS.get(dataset, dataset)}, with {seeds} seed{'s' if seeds != 1 else ''} per arm, the best "
            f"rule is: {'; '.join(said)}.{caveat}"
        )
    return paragraph(sentences)


SUMMARY_TABLE, VERDICTS_TABLE = "11_trained_summary", "11_trained_verdicts"


def speed_table_name(dataset: str) -> str:
    """The name of ``dataset``'s timed training-step table."""
    return f"11_trained_speed_{dataset}"


def run_protocol(
    chosen: TrainedBudget,
    workers: int = 1,
    log: Callable[[str], None] = lambda line: None,
    train_missing_runs: bool = True,
    device: str | torch.device | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The whole protocol as notebook 11 runs it at ``chosen``'s scale: every run (the missing ones trained,
    :func:`trained_runs`), each data set's training steps timed (:func:`training_speed_table`), the summary and the
    verdicts. Returns (the tables by name, the raw times by name)."""
    runs = trained_runs(chosen, workers, log, train_missing_runs)
    tables: dict[str, pd.DataFrame] = {RUNS_TABLE: runs}
    raws = {}
    for dataset in chosen.datasets:
        log(f"timing the training steps on {dataset}")
        tables[speed_table_name(dataset)], raws[speed_table_name(dataset)] = training_speed_table(
            dataset, chosen, device
        )
    if not runs.empty:
        tables[SUMMARY_TABLE] = with_speed(trained_summary(runs), speeds(tables))
        tables[VERDICTS_TABLE] = level_verdicts(runs)
    return tables, raws


def committed(scale: str = STUDY_SCALE) -> dict[str, pd.DataFrame]:
    """The trained curve's tables as the scratch report committed them (``figures/scratch/tables``): runs, summary,
    verdicts and each data set's timed table, keyed by their table names; empty when it has not been run yet."""
    tables = committed_tables(scale)
    found = {}
    for name in (RUNS_TABLE, SUMMARY_TABLE, VERDICTS_TABLE, *(speed_table_name(d) for d in DATASETS)):
        path = tables / f"{name}.csv"
        if path.is_file():
            found[name] = pd.read_csv(path)
    return found


def speeds(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame | None:
    """The timed tables of every data set in ``tables``, stacked (None when none was timed)."""
    found = [tables[speed_table_name(d)] for d in DATASETS if speed_table_name(d) in tables]
    return pd.concat(found, ignore_index=True) if found else None


def shown(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The columns the notebook shows of a table (the saved table keeps every column)."""
    return frame[[c for c in columns if c in frame]]


SUMMARY_COLUMNS = [
    "dataset",
    "arm",
    "parameter",
    "seeds",
    "top1_rule_on",
    "top1_rule_off",
    "diff",
    "diff_low",
    "diff_high",
    "speedup",
    "speedup_low",
    "speedup_high",
]
SPEED_COLUMNS = [
    "arm",
    "parameter",
    "ideal_speedup",
    "speedup",
    "speedup_low",
    "speedup_high",
    "measured_over_ideal",
    "verdict",
]
