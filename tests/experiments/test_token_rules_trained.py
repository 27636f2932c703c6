"""Notebook 11's trained curve (vitstudy.experiments.token_rules_trained): matched levels, rules that train, the runs
(cached, resumable, the same in workers as here), the verdicts and the figure."""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from vitstudy import bench, executors
from vitstudy.experiments import token_rules, token_rules_trained
from vitstudy.experiments.token_rules_trained import BASELINE, TrainedBudget

SCRATCH = token_rules_trained.budget("scratch")
# One data set, one rule at one level, one seed: two runs (the rule and the baseline fine-tuned alike), seconds.
TINY = dataclasses.replace(
    token_rules_trained.budget("smoke"), datasets=("fashion_mnist",), rules=("tome",), seeds=(0,)
)


@pytest.fixture
def tiny_cache(smoke_cache, share_cache, monkeypatch):
    """This test's cache with the session's smoke baseline linked in; one thread, no core sharing, so that a run
    computes the same here as in a single-thread worker."""
    share_cache(smoke_cache, ["baselines"])
    monkeypatch.setenv("VITSTUDY_SHARE_CORES", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("dataset", list(token_rules.DATASETS))
def test_every_rule_reaches_every_level_within_two_percent(dataset):
    """Every rule at every level of the protocol, on each data set's model: its FLOP ideal within 2 % of the level."""
    arms = token_rules_trained.arms_on(dataset, SCRATCH)
    assert {(a.rule, a.level) for a in arms if a.rule != BASELINE} == {
        (rule, level) for rule in token_rules.RULES for level in token_rules_trained.TRAINED_LEVELS
    }
    assert all(abs(arm.ideal / arm.level - 1) <= token_rules.LEVEL_TOLERANCE for arm in arms)


def test_the_training_forward_counts_each_rules_highest_level():
    """torch's FLOP count of the *training* forward (train mode: PatchDropout drops, ToMe merges, SkipViT skips)
    agrees with each rule's highest level (where a miscount would show most; counting is slow, so one level)."""
    arms = token_rules_trained.arms_on("fashion_mnist", SCRATCH)
    plain = token_rules_trained.plain_model(SCRATCH.recipe("fashion_mnist"), (1, 28, 28), 10)
    images = torch.randn(1, 1, 28, 28)
    base = bench.count_flops(plain.train(), images)
    for arm in arms:
        if arm.level != max(token_rules_trained.TRAINED_LEVELS):
            continue
        model = token_rules_trained.rule_model(plain, arm.rule, arm.parameter).train()
        counted = base / bench.count_flops(model, images)
        assert abs(counted / arm.level - 1) <= token_rules.LEVEL_TOLERANCE + 0.005, (arm, counted)


def test_tome_trains_its_merge_is_differentiable():
    """ToMe's patched forward runs forward and backward in training mode, merging tokens: every gradient is finite
    and the patch embedding's (reached only through the merged tokens) is not zero."""
    arm = next(a for a in token_rules_trained.arms_on("fashion_mnist", SCRATCH) if a.rule == "tome")
    torch.manual_seed(0)
    plain = token_rules_trained.plain_model(SCRATCH.recipe("fashion_mnist"), (1, 28, 28), 10)
    model = token_rules_trained.rule_model(plain, "tome", arm.parameter).train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0


def test_patch_dropout_draws_anew_in_training_and_the_same_at_test():
    """The PatchDropout arm drops the same number of patches in training as at test, a fresh draw each training
    step and one fixed draw at test."""
    layer = token_rules.SeededPatchDropout(0.5, num_prefix_tokens=1)
    x = torch.randn(1, 11, 4)
    layer.train()
    assert layer(x).shape == (1, 6, 4)  # timm keeps int(10 x 0.5) of the 10 patches, and the prefix token
    draws = {tuple(layer(x)[0, 1:, 0].tolist()) for _ in range(8)}
    assert len(draws) > 1
    layer.eval()
    assert torch.equal(layer(x), layer(x)) and layer(x).shape == (1, 6, 4)


def test_runs_in_two_workers_equal_the_local_ones_and_finished_runs_are_read(tiny_cache, monkeypatch):
    """The same two runs trained by two single-thread workers and here give the same rows; a finished run's
    row.json is read, never trained again."""
    lines = []
    assert token_rules_trained.train_missing(TINY, 2, log=lines.append) == 2
    assert sum("trained in" in line for line in lines) == 2 and not token_rules_trained.missing_runs(TINY)
    in_workers = token_rules_trained.trained_runs(TINY)
    folders = [
        token_rules_trained.run_dir(d, token_rules_trained._arm(d, r, level, TINY), s, TINY)
        for d, r, level, s in token_rules_trained.study_runs(TINY)
    ]
    for folder in folders:
        (folder / token_rules_trained.ROW_FILE).unlink()
        for path in folder.iterdir():  # nothing of the workers' training left: the local run starts over
            path.unlink()
    here = token_rules_trained.trained_runs(TINY)
    varying = ["train_minutes", "trained_on"]
    pd.testing.assert_frame_equal(in_workers.drop(columns=varying), here.drop(columns=varying))

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(token_rules_trained, "fine_tune", refuse)
    again = token_rules_trained.trained_runs(TINY)
    pd.testing.assert_frame_equal(again, here)
    assert json.loads((folders[0] / token_rules_trained.ROW_FILE).read_text())["run"] == folders[0].name


@pytest.mark.slow(seconds=20)
def test_runs_on_ray_equal_the_local_ones(tiny_cache, local_ray, monkeypatch):
    """`--ray`: the runs as one-CPU tasks on a local Ray give the rows the local path gives, in the same cache
    folders (the one fan-out, vitstudy.executors.run_tasks, that notebook 08's study uses too)."""
    monkeypatch.setenv(executors.RAY_ENV, executors.LOCAL_RAY)
    lines = []
    assert token_rules_trained.train_missing(TINY, 2, log=lines.append) == 2
    assert [line for line in lines if "trained in" in line] and all("Ray: local" in line for line in lines)
    on_ray = token_rules_trained.trained_runs(TINY)
    monkeypatch.delenv(executors.RAY_ENV)
    for run in token_rules_trained.study_runs(TINY):
        folder = token_rules_trained.run_dir(run[0], token_rules_trained._arm(*run[:3], TINY), run[3], TINY)
        for path in folder.iterdir():  # the local path trains the same runs again from nothing
            path.unlink()
    here = token_rules_trained.trained_runs(TINY)
    varying = ["train_minutes", "trained_on"]
    # Ray's workers and this process may run torch's kernels on different thread pools: last float32 digits only
    pd.testing.assert_frame_equal(on_ray.drop(columns=varying), here.drop(columns=varying), rtol=1e-5)


def test_committed_row_of_the_same_folder_is_adopted(tmp_path):
    """A run whose folder name is in the committed per-run table is filled from it, not trained."""
    folder = tmp_path / "cache" / "scratch-fashion_mnist-tome-1.3-abc-def-seed0"
    tables = tmp_path / "tables"
    tables.mkdir()
    pd.DataFrame([{"run": folder.name, "top1_rule_on": 80.0, "train_minutes": 1.0}]).to_csv(
        tables / f"{token_rules_trained.RUNS_TABLE}.csv", index=False
    )
    assert token_rules_trained.adopt_committed(folder, tables)
    assert json.loads((folder / token_rules_trained.ROW_FILE).read_text())["top1_rule_on"] == 80.0
    assert not token_rules_trained.adopt_committed(tmp_path / "other", tables)


def synthetic_runs(lead: float, noise: float, seeds: int = 6) -> pd.DataFrame:
    """Runs on one data set at one level: the baseline, tome ahead of drop by ``lead`` points, seed noise ``noise``
    shared by tome and drop except for a small independent part."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        shared = rng.normal(0, 1.0)
        own = rng.normal(0, noise, 2)
        for rule, top1 in (
            ("baseline", 80 + shared),
            ("tome", 79 + shared + own[0]),
            ("drop", 79 - lead + shared + own[1]),
        ):
            arm = BASELINE if rule == BASELINE else f"{rule} 1.30×"
            rows.append(
                dict(
                    dataset="fashion_mnist",
                    rule=rule,
                    level=1.0 if rule == BASELINE else 1.3,
                    arm=arm,
                    parameter=rule,
                    ideal_speedup=1.0 if rule == BASELINE else 1.3,
                    seed=seed,
                    top1_rule_on=top1,
                    top1_rule_off=top1 + 0.5,
                    train_minutes=1.0,
                )
            )
    return pd.DataFrame(rows)


def test_a_clear_lead_is_resolved_and_a_small_one_says_the_seeds_it_needs():
    resolved = token_rules_trained.level_verdicts(synthetic_runs(lead=2.0, noise=0.2)).iloc[0]
    assert resolved["best"] == "tome" and resolved["runner_up"] == "drop" and resolved["verdict"] == "resolved"
    assert resolved["lead_low"] > 0 and math.isnan(resolved["seeds_to_resolve"])
    unresolved = token_rules_trained.level_verdicts(synthetic_runs(lead=0.1, noise=1.0)).iloc[0]
    assert unresolved["verdict"].startswith("cannot tell: no difference resolved")
    assert unresolved["lead_low"] < 0 < unresolved["lead_high"] and unresolved["seeds_to_resolve"] > 6


def test_summary_pairs_with_the_baseline_and_the_closing_reads_the_tables():
    runs = synthetic_runs(lead=2.0, noise=0.2)
    summary = token_rules_trained.trained_summary(runs).set_index("arm")
    assert summary.loc["tome 1.30×", "diff"] == pytest.approx(-1.0, abs=0.3)
    assert summary.loc[BASELINE, "diff"] == 0 and summary.loc["tome 1.30×", "pairs"] == 6
    tables = {
        token_rules_trained.RUNS_TABLE: runs,
        token_rules_trained.SUMMARY_TABLE: token_rules_trained.with_speed(summary.reset_index(), None),
        token_rules_trained.VERDICTS_TABLE: token_rules_trained.level_verdicts(runs),
    }
    text = token_rules_trained.findings(tables, planned=24)
    assert "Interim: 18 of 24 runs" in text and "ToMe" in text and "(resolved)" in text
    assert "no level" in token_rules_trained.findings({})


def test_the_figure_draws_with_and_without_timing():
    runs = synthetic_runs(lead=2.0, noise=0.2)
    summary = token_rules_trained.trained_summary(runs)
    speed = pd.DataFrame({"dataset": "fashion_mnist", "arm": [BASELINE, "tome 1.30×", "drop 1.30×"]}).assign(
        speedup=[1.0, 1.25, 1.2], speedup_low=[1.0, 1.2, 1.15], speedup_high=[1.0, 1.3, 1.25]
    )
    for timed in (None, speed):
        fig = token_rules_trained.curves_plot(token_rules_trained.with_speed(summary, timed), "fashion_mnist")
        assert len(fig.axes[0].lines) >= 2


def test_a_budget_refuses_other_scales_in_one_line():
    with pytest.raises(ValueError, match="scale"):
        token_rules_trained.budget("quick")
    assert isinstance(token_rules_trained.budget("scratch"), TrainedBudget)
