"""Training one SkipViT row (vitstudy.experiments.skipvit.skipvit_runs): the shared recipe, cache folders, budgets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from vitstudy import config
from vitstudy import skipvit as sv
from vitstudy.config import PAPER_SMOKE
from vitstudy.experiments.skipvit import skipvit_runs, warmup
from vitstudy.experiments.skipvit.skipvit_runs import RowTraining


def test_run_dir_depends_on_the_settings_and_the_warmup():
    """Two settings, or two warm-ups, of one row name never share a cache folder; the same run does."""
    training = warmup.budget("smoke").training
    one = skipvit_runs.run_dir(training, "row", sv.TABLE3, 0, 0)
    assert one == skipvit_runs.run_dir(training, "row", sv.TABLE3, 0, 0)
    assert one != skipvit_runs.run_dir(training, "row", sv.preset("skip_4_7_30_s11"), 0, 0)
    assert one != skipvit_runs.run_dir(training, "row", sv.TABLE3, 1, 0)


def test_run_dir_depends_on_the_start():
    """A row fine-tuned from the baseline and the same row from scratch never share a cache folder."""
    scratch = RowTraining("smoke", config.SCALES["smoke"].train)
    tuned = RowTraining("smoke", config.SCALES["smoke"].train, start="baseline")
    assert skipvit_runs.run_dir(scratch, "row", sv.TABLE3, 0, 0) != skipvit_runs.run_dir(tuned, "row", sv.TABLE3, 0, 0)


def test_unknown_start_is_one_clear_line():
    """``start`` is scratch or baseline."""
    with pytest.raises(ValueError, match="start='imagenet' is not allowed"):
        RowTraining("smoke", config.SCALES["smoke"].train, start="imagenet")


@dataclass(frozen=True)
class Budget:
    training: RowTraining


BUDGETS = {
    "smoke": Budget(RowTraining("smoke", config.SCALES["smoke"].train)),
    "paper": Budget(RowTraining.of(config.SCALES["paper"])),
    PAPER_SMOKE: Budget(RowTraining.of(config.paper_smoke(config.SCALES["paper"]))),
}


def test_budget_for_picks_the_paper_smoke_budget_and_the_imagenet_folder(monkeypatch, tmp_path):
    """The paper scale reads its ImageNet folder from the environment; at smoke sizes it gets budgets[paper_smoke]."""
    monkeypatch.setenv("VITSTUDY_IMAGENET", str(tmp_path))
    assert skipvit_runs.budget_for(BUDGETS, "paper").training.train.data_root == str(tmp_path)
    assert skipvit_runs.budget_for(BUDGETS, "paper").training.train.train_size is None
    monkeypatch.setenv(config.PAPER_SMOKE_ENV, "1")
    smoke_sizes = skipvit_runs.budget_for(BUDGETS, "paper").training.train
    assert smoke_sizes == dataclasses.replace(BUDGETS[PAPER_SMOKE].training.train, data_root=str(tmp_path))


def test_budget_for_refuses_a_scale_without_a_budget():
    """A scale the notebook does not run at is one line naming the ones it does (never the paper_smoke key)."""
    with pytest.raises(ValueError, match="scale='quick' is not allowed: expected one of smoke, paper$"):
        skipvit_runs.budget_for(BUDGETS, "quick")
