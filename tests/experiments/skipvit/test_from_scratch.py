"""Notebook 08's experiment (vitstudy.experiments.skipvit.from_scratch): rows, data sets, the PatchDropout match,
statistics, resuming, runs taken from the committed table."""

import dataclasses
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from vitstudy import bench
from vitstudy.config import SCALES, TrainConfig
from vitstudy.experiments.skipvit import from_scratch as scratch
from vitstudy.experiments.skipvit.common import RowTraining
from vitstudy.files import project_root

COMMITTED = project_root() / "figures" / "scratch" / "tables"  # the scratch protocol's published results


@pytest.fixture
def digits_budget():
    """Seconds per run: a width-16 depth-12 ViT on 128 digits images, 2 epochs, 2 seeds, warm-up 1 epoch."""
    cfg = TrainConfig(
        model="vitstudy_tiny_patch4_28",
        model_kwargs=dict(patch_size=2, embed_dim=16, num_heads=2),
        dataset="digits",
        train_size=128,
        val_size=32,
        epochs=2,
        batch_size=32,
        augment=False,
    )
    return scratch.ScratchBudget(RowTraining("smoke", cfg, seeds=(0, 1), warmup_fraction=0.5))


def test_patch_dropout_rate_keeps_the_matched_count(digits_budget, monkeypatch):
    """timm's int(L * (1 - rate)) keeps exactly the count whose FLOPs are closest to the headline row's; asked again
    for the same recipe and row, the process answers from what it found (no model built), a copy each time."""
    match = scratch.matched_patch_drop_rate(digits_budget)
    assert int(match["patches"] * (1 - match["patch_drop_rate"])) == match["patches_kept"]
    assert 0 < match["patch_drop_rate"] < 1
    assert abs(match["gflops"] - match["target_gflops"]) / match["target_gflops"] < 0.05
    built = []
    monkeypatch.setattr(scratch, "default_model_factory", lambda *args: built.append(args))
    match["patch_drop_rate"] = -1.0
    assert scratch.matched_patch_drop_rate(digits_budget)["patch_drop_rate"] > 0 and not built


def test_patch_dropout_rate_is_matched_on_each_data_sets_own_model():
    """The cluttered set's rate is counted on its own model (56x56 canvases, patch 8) and labelled with its name;
    the committed table has one row per data set of the study."""
    budget = scratch.budget("scratch")
    cluttered = scratch.matched_patch_drop_rate(budget, dataset="fashion_mnist_cluttered")
    recipe = scratch.matched_patch_drop_rate(budget)
    assert cluttered["dataset"] == "fashion_mnist_cluttered" and recipe["dataset"] == "fashion_mnist"
    assert cluttered["target_gflops"] != recipe["target_gflops"]  # patch 8 on 1 channel embeds 4x the pixels
    committed = pd.read_csv(COMMITTED / "08_patch_dropout_rate.csv")
    assert list(committed["dataset"]) == list(scratch.STUDY_DATASETS)


def test_paired_interval_equals_the_t_interval_of_the_differences():
    """The paired difference's 95% interval is the one-sample t interval of the differences (mean ± t·sem)."""
    row, base = pd.Series([80.0, 81.5, 79.0], index=[0, 1, 2]), pd.Series([80.5, 80.0, 80.1], index=[0, 1, 2])
    got = scratch.paired_difference(row, base)
    low, high = stats.t.interval(0.95, 2, loc=(row - base).mean(), scale=stats.sem(row - base))
    assert got["diff_low"] == pytest.approx(low) and got["diff_high"] == pytest.approx(high)


def test_paired_difference_pairs_by_seed():
    """Seeds are matched by index, not by position; one pair gives no interval."""
    got = scratch.paired_difference(pd.Series([2.0, 5.0], index=[1, 0]), pd.Series([1.0], index=[1]))
    assert got["diff"] == 1.0 and got["pairs"] == 1 and math.isnan(got["diff_low"])


@pytest.mark.parametrize(
    ("low", "high", "direction", "word"),
    [
        (0.5, 2.0, "better", "reproduced"),
        (-2.0, -0.5, "better", "contradicted"),
        (-1.0, 1.0, "better", "cannot"),
        (-0.4, 0.3, "none", "reproduced"),
        (-3.0, 0.5, "none", "cannot"),
        (-2.0, -0.2, "none", "contradicted"),
        (-2.0, -0.5, "worse", "reproduced"),
    ],
)
def test_verdicts(low, high, direction, word):
    """The verdict follows the interval: clear of zero in the claimed direction, against it, or spanning it."""
    assert scratch.verdict(low, high, direction).startswith(word)


@pytest.mark.parametrize(
    ("low", "high", "direction", "paper", "word"),
    [
        (-0.9, 0.45, "worse", -1.78, "contradicted in size"),
        (-0.9, 0.45, "worse", -0.5, "cannot"),
        (-0.8, 0.1, "better", 1.77, "contradicted in size"),
        (0.2, 0.9, "better", 2.55, "reproduced"),
        (-1.2, 0.1, "none", -0.01, "cannot"),
    ],
)
def test_an_interval_that_spans_zero_can_still_exclude_the_papers_size(low, high, direction, paper, word):
    """Where the sign is not resolved, a paper's difference outside the interval is contradicted in size; a
    direction that is resolved is judged on the direction alone."""
    assert scratch.verdict(low, high, direction, paper).startswith(word)


def test_other_scales_are_refused():
    """The protocol runs at scratch or smoke only: quick is one clear line."""
    with pytest.raises(ValueError, match="scale='quick' is not allowed: expected one of smoke, scratch"):
        scratch.budget("quick")


def test_scratch_budget_is_the_scales_recipe_on_both_data_sets_seed_major():
    """At scratch scale every row trains the scale's own recipe and seeds from scratch, on Fashion-MNIST and its
    cluttered version (the 49-token patch-8 model, the same recipe for its own number of epochs); the runs go
    seed-major, so an interrupted study already pairs rows with their baseline."""
    budget = scratch.budget("scratch")
    training = budget.training
    assert training.train == SCALES["scratch"].train and training.seeds == SCALES["scratch"].seeds
    assert training.start == "scratch" and budget.study_datasets == scratch.STUDY_DATASETS
    cluttered = budget.training_on("fashion_mnist_cluttered").train
    assert (cluttered.dataset, cluttered.model) == ("fashion_mnist_cluttered", "vitstudy_tiny_patch8_56")
    same = dataclasses.replace(
        cluttered, dataset=training.train.dataset, model=training.train.model, epochs=training.train.epochs
    )
    assert same == training.train and cluttered.epochs == budget.cluttered_epochs
    runs = scratch.study_runs(budget)
    per_seed = sum(len(scratch.rows_on(dataset)) for dataset in scratch.STUDY_DATASETS)
    assert len(runs) == len(training.seeds) * per_seed and runs[0] == ("fashion_mnist", "baseline", training.seeds[0])
    assert [seed for _, _, seed in runs] == sorted(seed for _, _, seed in runs)


def test_summary_of_the_committed_runs_is_the_committed_summary():
    """scratch_summary (DataFrame.pivot, scipy's ttest_rel) of the published 08_runs.csv gives the published
    08_summary.csv: every value equal to 12 significant digits (the interval bounds differ in the last bit)."""
    runs = pd.read_csv(COMMITTED / "08_runs.csv")
    committed = pd.read_csv(COMMITTED / "08_summary.csv")
    pd.testing.assert_frame_equal(scratch.scratch_summary(runs), committed, check_dtype=False, rtol=1e-12)


def test_verdicts_of_the_committed_runs_are_the_committed_verdicts():
    """claim_verdicts of the published 08_runs.csv gives the published 08_verdicts.csv, verdicts identical."""
    runs = pd.read_csv(COMMITTED / "08_runs.csv")
    committed = pd.read_csv(COMMITTED / "08_verdicts.csv")
    pd.testing.assert_frame_equal(scratch.claim_verdicts(runs), committed, check_dtype=False, rtol=1e-12)


def test_interrupted_study_trains_only_the_missing_runs(digits_budget, monkeypatch):
    """A study stopped after two runs trains only the rest on the next call, and then aggregates every run."""
    rows = ("baseline", "skip_6_55_s11", "patch_dropout")
    trained, real = [], scratch.train_row

    def counting(budget, name, *args, **kwargs):
        if len(trained) == 2 and stop:
            raise KeyboardInterrupt  # the user stops the study
        trained.append(name)
        return real(budget, name, *args, **kwargs)

    monkeypatch.setattr(scratch, "train_row", counting)
    stop = True
    with pytest.raises(KeyboardInterrupt):
        scratch.scratch_runs(digits_budget, rows)
    assert len(scratch.missing_runs(digits_budget, rows)) == 4
    stop = False
    runs, histories = scratch.scratch_runs(digits_budget, rows)
    assert len(trained) == 6 and len(runs) == 6 and not scratch.missing_runs(digits_budget, rows)
    assert set(histories["row"]) == set(rows)
    machine = f"{bench.environment_info('cpu')['device_name']} ({torch.backends.cpu.get_cpu_capability()})"
    assert (runs["trained_on"] == machine).all()  # train_minutes depend on it
    again, _ = scratch.scratch_runs(digits_budget, rows)  # everything finished: read, nothing trained
    assert len(trained) == 6
    pd.testing.assert_frame_equal(again.drop(columns="history", errors="ignore"), runs)
    summary = scratch.scratch_summary(runs)
    assert list(summary["seeds"]) == [2, 2, 2] and summary.loc[0, "diff_on"] == 0
    verdicts = scratch.claim_verdicts(runs)
    assert set(verdicts["row"]) == {"skip_6_55_s11"}


def test_warmup_row_waits(digits_budget):
    """The warm-up row trains its first epoch without dropping (warmup_epochs recorded)."""
    one_seed = scratch.ScratchBudget(dataclasses.replace(digits_budget.training, seeds=(0,)))
    runs, histories = scratch.scratch_runs(one_seed, ("skip_4_7_30_s10_warmup",))
    assert int(runs.loc[0, "warmup_epochs"]) == 1 and len(histories) == 2


def test_missing_runs_train_in_parallel_workers(digits_budget):
    """workers=2: the missing runs (one row, two seeds) train in two single-thread processes (in this test's cache),
    then are read."""
    rows = ("baseline",)
    lines = []
    runs, _ = scratch.scratch_runs(digits_budget, rows, log=lines.append, workers=2)
    assert len(runs) == 2 and not scratch.missing_runs(digits_budget, rows)
    assert sum("trained in" in line for line in lines) == 2 and "2/2 runs" in " ".join(lines)


def test_committed_runs_keep_their_folder_names():
    """Every committed run whose code did not change (all but EViT's fused token, now EViT's computation) is
    named by the folder the study computes for it today, so a new machine takes it instead of training it."""
    runs = scratch.with_dataset(pd.read_csv(COMMITTED / "08_runs.csv"))
    budget = scratch.budget("scratch")
    rates = {
        row["dataset"]: row["patch_drop_rate"]
        for _, row in pd.read_csv(COMMITTED / "08_patch_dropout_rate.csv").pipe(scratch.with_dataset).iterrows()
    }
    expected = {
        scratch._row_run(budget.training_on(d), name, rates.get(d, 0.0), seed)[2].name
        for d, name, seed in scratch.study_runs(budget)
    }
    committed = runs["run_dir"].map(lambda path: path.rsplit("/", 1)[-1])
    old_fused = (runs["row"] == "fused_6_45") & ~runs["settings"].str.contains("fuse_weights")
    unchanged = committed[~old_fused]
    assert len(unchanged) >= 18 and set(unchanged) <= expected


# A path that starts at a file-system root (or a home folder, or a Windows drive) after a separator of a CSV or
# Markdown cell: "6 / 55% / skip 11" has spaces after its slashes and never matches.
ABSOLUTE_PATH = re.compile(r"""(?:^|[\s,|"'(=])(/[\w.-]+/[\w.-]+|~/[\w.-]+|[A-Za-z]:\\[\w.-]+)""", re.MULTILINE)


def test_no_committed_table_holds_an_absolute_path():
    """Every committed table under figures/ names paths relative to something in the project (the cache root for
    08_runs' run_dir), never a folder of the machine that wrote it."""
    tables = [p for p in (project_root() / "figures").rglob("*") if p.suffix in (".csv", ".md") and "tables" in p.parts]
    assert tables
    found = {
        str(p.relative_to(project_root())): m.group(1) for p in tables if (m := ABSOLUTE_PATH.search(p.read_text()))
    }
    assert found == {}
    assert ABSOLUTE_PATH.search("a,/home/me/cache/skipvit/x,b") and not ABSOLUTE_PATH.search("| 6 / 55% / skip 11 |")


def test_fused_row_is_a_new_run_under_evits_computation():
    """The fused row's folder changed with its computation (the old one renormalised after the whole block)."""
    budget = scratch.budget("scratch")
    folder = scratch._row_run(budget.training, "fused_6_45", 0.0, 0)[2].name
    assert folder.startswith("scratch-fused_6_45-2a530d254c-") and not folder.endswith("f4a46501-w0-seed0")


def test_runs_are_taken_from_the_committed_table_not_trained(digits_budget, tmp_path, monkeypatch):
    """A finished run published in 08_runs (+ raw 08_histories) is read back on a machine whose cache lacks it:
    row and history equal, nothing trained, the committed files untouched."""
    rows = ("baseline", "drop_6_55")
    runs, histories = scratch.scratch_runs(digits_budget, rows)
    tables = tmp_path / "figures" / "smoke" / "tables"
    (tables / "raw").mkdir(parents=True)
    runs.to_csv(tables / "08_runs.csv", index=False)
    histories.to_csv(tables / "raw" / "08_histories.csv", index=False)
    before = {p: p.read_bytes() for p in tables.rglob("*.csv")}
    monkeypatch.setenv("VITSTUDY_CACHE", str(tmp_path / "fresh_cache"))  # a new machine: an empty cache
    monkeypatch.setattr(scratch, "committed_tables", lambda scale: tables)
    monkeypatch.setattr(scratch, "train_row", lambda *a, **k: pytest.fail("a committed run was trained again"))
    assert scratch.missing_runs(digits_budget, rows) == []
    again, again_histories = scratch.scratch_runs(digits_budget, rows)
    columns = ["row", "seed", "top1_dropping_on", "top1_dropping_off", "val_top1", "run", "run_dir"]
    pd.testing.assert_frame_equal(again[columns], runs[columns])
    assert (runs["run_dir"] == "skipvit/" + runs["run"]).all()  # relative to the cache root, on both machines
    pd.testing.assert_frame_equal(again_histories, histories, check_dtype=False)
    assert {p: p.read_bytes() for p in tables.rglob("*.csv")} == before
    assert again["adopted_from"].notna().all()


def test_interim_look_reads_finished_runs_only(digits_budget, monkeypatch):
    """train_missing_runs=False (the notebook's TRAIN = False): the finished runs, nothing trained."""
    one_seed = scratch.ScratchBudget(dataclasses.replace(digits_budget.training, seeds=(0,)))
    scratch.scratch_runs(one_seed, ("baseline",))
    monkeypatch.setattr(scratch, "train_row", lambda *a, **k: pytest.fail("an interim look trained"))
    runs, _ = scratch.scratch_runs(digits_budget, ("baseline", "drop_6_55"), train_missing_runs=False)
    assert list(zip(runs["row"], runs["seed"])) == [("baseline", 0)]


def test_claims_are_judged_per_data_set_with_the_seeds_that_would_tell():
    """Verdicts per data set; a claim the interval cannot tell names the seeds that would, at that spread."""
    rng = np.random.default_rng(0)
    base = 80 + rng.normal(0, 0.3, 6)
    frames = []
    # mean -0.6, sd 1.4: no direction at 6 seeds, and the paper's -1.78 inside the interval
    wobble = np.array([-2.5, 1.0, -1.8, 0.9, -1.6, 0.4])
    for dataset, change in (("fashion_mnist", -2.0 + rng.normal(0, 0.5, 6)), ("fashion_mnist_cluttered", wobble)):
        for row, values in (("baseline", base), ("fused_6_45", base + change)):
            frames.append(pd.DataFrame({"dataset": dataset, "row": row, "seed": range(6), "top1_dropping_on": values}))
    verdicts = scratch.claim_verdicts(pd.concat(frames, ignore_index=True))
    assert list(verdicts["dataset"]) == ["fashion_mnist", "fashion_mnist_cluttered"]
    clear, unclear = verdicts.iloc[0], verdicts.iloc[1]
    assert clear["verdict"] == "reproduced" and math.isnan(clear["seeds_to_resolve"])
    assert unclear["verdict"].startswith("cannot") and unclear["seeds_to_resolve"] > 6


def test_two_seeds_that_agree_give_no_verdict():
    """Two pairs whose differences happen to agree give a narrow t interval by chance: "cannot tell" until three."""
    runs = pd.DataFrame(
        {
            "dataset": "fashion_mnist",
            "seed": [0, 0, 1, 1],
            "row": ["skip_6_55_s11", "fused_6_45"] * 2,
            "top1_dropping_on": [53.15, 52.53, 53.15, 52.54],
        }
    )
    line = scratch.claim_verdicts(runs).set_index("row").loc["skip_6_55_s11"]
    assert line["pairs"] == 2 and line["diff_low"] > 0  # the interval alone would say "reproduced"
    assert line["verdict"] == "cannot tell (only 2 seeds; a verdict needs 3)"


def test_training_time_sums_minutes_per_data_set_and_machine():
    """Per data set and machine: runs, summed and median minutes; a run without ``trained_on`` is 'not recorded'."""
    runs = pd.DataFrame(
        {
            "dataset": ["a", "a", "a", "b"],
            "trained_on": ["cpu X", "cpu X", None, "cpu Y"],
            "train_minutes": [10.0, 20.0, 5.0, 30.0],
        }
    )
    table = scratch.training_time(runs).set_index(["dataset", "trained_on"])
    assert table.loc[("a", "cpu X"), "runs"] == 2 and table.loc[("a", "cpu X"), "train_minutes"] == 30.0
    assert table.loc[("a", "cpu X"), "median_minutes_per_run"] == 15.0
    assert table.loc[("a", scratch.NOT_RECORDED), "runs"] == 1
    assert table.loc[("b", "cpu Y"), "train_hours"] == 0.5
    old = scratch.training_time(runs.drop(columns=["trained_on"]))  # tables from before trained_on
    assert set(old["trained_on"]) == {scratch.NOT_RECORDED}
