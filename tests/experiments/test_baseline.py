"""Notebook 00's experiment (vitstudy.experiments.baseline): its budget, sample images and tables."""

import types

import numpy as np
import pytest
import torch

from vitstudy import bench
from vitstudy.config import SCALES, paper_smoke
from vitstudy.data import build_splits
from vitstudy.experiments import baseline

FAST = bench.CompareSettings(rounds=2, min_run_time=0.001, warmup_calls=1, bootstrap=100, peak_size=64)


@pytest.mark.parametrize("scale", ["smoke", "quick", "full", "paper"])
def test_every_report_scale_has_a_budget(scale):
    """Each scale notebook 00 runs at has its budget, named for it."""
    assert baseline.budget(SCALES[scale]).scale == scale


def test_unsupported_scale_is_one_clear_line():
    """A scale without a budget is one ValueError naming it and the scales allowed."""
    with pytest.raises(ValueError, match=r"scale='scratch' is not allowed: expected one of smoke, quick, full, paper"):
        baseline.budget("scratch")


def test_paper_scale_at_smoke_sizes_times_as_smoke():
    """The paper scale at smoke sizes (a CPU test) gets the smoke timing."""
    assert baseline.budget(paper_smoke(SCALES["paper"])).timing == baseline.BUDGETS["smoke"].timing


def test_class_examples_give_one_column_per_class(digits_cfg):
    """Row r of the grid holds the r-th image of every class, in class order, titled with its class."""
    test = build_splits(digits_cfg).test
    images, titles = baseline.class_examples(test, per_class=2)
    assert images.shape == (20, 1, 8, 8)
    assert titles == [str(k) for k in range(10)] * 2
    second_of_class_3 = torch.nonzero(test.targets == 3)[1, 0]
    assert torch.equal(images[13], test[int(second_of_class_3)][0])


def test_speed_and_summary_tables_from_one_comparison():
    """The speed table has the baseline's row and its A/A row with the protocol; the summary row takes the
    baseline's images/s from it."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    comparison = baseline.inference_speed(model, torch.randn(4, 1, 8, 8), baseline.BaselineBudget("smoke", FAST), "cpu")
    speed = baseline.speed_table(comparison, 4)
    assert speed["arm"].tolist() == [baseline.BASELINE, bench.control_arm(baseline.BASELINE)]
    assert speed["verdict"].iloc[0] == bench.BASELINE_VERDICT and speed["verdict"].iloc[1].startswith("A/A control")
    assert {"images_per_s", "speedup_low", "speedup_high", "device", "rounds", "batch_size", "note"} <= set(speed)
    result = types.SimpleNamespace(summary=lambda: {"model": "tiny", "test_top1": 50.0})
    summary = baseline.summary_table("smoke", result, speed)
    assert summary.to_dict("records") == [
        {"scale": "smoke", "model": "tiny", "test_top1": 50.0, "inference_im_s": speed["images_per_s"].iloc[0]}
    ]


@pytest.mark.parametrize(("mistakes", "start"), [(25, 24), (24, 0), (3, 0)])
def test_mistakes_page_is_the_second_page_when_there_is_one(mistakes, start):
    """The browser check moves to the second page of mistakes when there are more than a page of them."""
    targets = np.zeros(100, dtype=int)
    predictions = targets.copy()
    predictions[:mistakes] = 1
    assert baseline.mistakes_page(predictions, targets, 24) == start
