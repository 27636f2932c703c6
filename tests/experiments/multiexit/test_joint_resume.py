"""The joint variant's training run resumes through the package's one training loop: ``train_joint`` is
:func:`vitstudy.train.train` with a model factory and a loss, so its checkpoint and resume are the code that
tests/test_resume_and_torchrun.py kills with SIGKILL and resumes in a subprocess. Here, in this process and without a
subprocess: a joint run stopped right after epoch 1's checkpoint resumes and ends as an uninterrupted one, exit heads
included (what the joint run adds to a plain one is its heads in the checkpoint)."""

import dataclasses

import pandas as pd
import pytest
import torch

from vitstudy import train as training
from vitstudy.checkpoint import load_weights, read_checkpoint_index
from vitstudy.data import build_splits
from vitstudy.experiments.multiexit.common import train_joint
from vitstudy.train import default_model_factory

COMPARED = ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "lr"]


class Stopped(Exception):
    """Stands for the kill: raised once epoch 1's checkpoint is committed."""


def test_joint_run_stopped_after_a_checkpoint_resumes_as_if_uninterrupted(digits_cfg, tmp_path, monkeypatch):
    """Stopped after epoch 1's checkpoint, the joint run resumes from it and ends with the uninterrupted run's
    metrics and weights, exit heads included."""
    cfg = dataclasses.replace(digits_cfg, train_size=128, val_size=64)  # two steps an epoch: resume is the point
    torch.manual_seed(0)
    start = default_model_factory(cfg, build_splits(cfg))
    reference, stopped = tmp_path / "uninterrupted", tmp_path / "stopped"
    train_joint(start, cfg, reference, exits=(1,))

    end_epoch = training._end_epoch

    def end_then_stop(run, epoch, stats):
        end_epoch(run, epoch, stats)
        raise Stopped

    with monkeypatch.context() as patch:
        patch.setattr(training, "_end_epoch", end_then_stop)
        with pytest.raises(Stopped):
            train_joint(start, cfg, stopped, exits=(1,))
    assert read_checkpoint_index(stopped)["epoch"] == 0

    train_joint(start, cfg, stopped, exits=(1,))
    resumed, expected = pd.read_csv(stopped / "metrics.csv"), pd.read_csv(reference / "metrics.csv")
    pd.testing.assert_frame_equal(resumed[COMPARED], expected[COMPARED], rtol=1e-6)
    weights = load_weights(stopped / read_checkpoint_index(stopped)["weights"])
    expected_weights = load_weights(reference / read_checkpoint_index(reference)["weights"])
    assert {"exit_heads.0.weight", "vit.head.weight"} <= set(weights)
    for name, value in expected_weights.items():
        torch.testing.assert_close(weights[name], value, msg=name)
