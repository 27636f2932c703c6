"""The loader-speed measurement (vitstudy.measure.loader_speed), at tiny sizes: what it times and how its
table is built. The measurement itself is run by hand (``python -m vitstudy measure loader_speed``)."""

import dataclasses
import types

import pytest
import torch

from vitstudy import bench
from vitstudy.data import build_splits
from vitstudy.fast_data import TensorLoader
from vitstudy.measure import loader_speed

FAST = bench.CompareSettings(rounds=2, min_run_time=0.001, warmup_calls=1, bootstrap=100, peak_size=64)


class TwoBatchLoader:
    """A loader of two batches per epoch, each naming its epoch; it records the epochs it was set to."""

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.sampler = types.SimpleNamespace(set_epoch=self.epochs.append)

    def __iter__(self):
        return iter([(self.epochs[-1], "a"), (self.epochs[-1], "b")])


def test_endless_batches_go_on_epoch_after_epoch():
    """After the last batch of an epoch comes the first of the next, with the sampler set to that epoch."""
    loader = TwoBatchLoader()
    batches = loader_speed.endless_batches(loader)
    assert [next(batches) for _ in range(5)] == [(0, "a"), (0, "b"), (1, "a"), (1, "b"), (2, "a")]
    assert loader.epochs == [0, 1, 2]


def test_loader_step_trains_on_the_next_batch(digits_cfg):
    """Each call is steps.training_step on the loader's next batch: the weights change and a loss comes back."""
    splits = build_splits(digits_cfg)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    before = model[1].weight.detach().clone()
    step = loader_speed.loader_step(TensorLoader(splits.train, 32, train=True), model, "cpu")
    losses = [step() for _ in range(3)]
    assert all(loss.ndim == 0 for loss in losses) and not torch.equal(model[1].weight, before)


def test_table_has_every_path_judged_against_the_no_loader_bound(digits_cfg):
    """One row per path, the no-loader arm and the A/A copy; every path's ideal is the no-loader arm's speed-up."""
    cfg = dataclasses.replace(digits_cfg, augment=True)
    rows, comparison = loader_speed.loader_speed(cfg, 32, FAST, workers=(), device="cpu")
    control = bench.control_arm(loader_speed.BASELINE)
    assert rows["arm"].tolist() == [loader_speed.BASELINE, "tensor", loader_speed.NO_LOADER, control]
    ideal = comparison.speedup(loader_speed.NO_LOADER)["speedup"]
    assert rows.set_index("arm").loc["tensor", "ideal_speedup"] == ideal
    assert rows["verdict"].iloc[0] == bench.BASELINE_VERDICT and rows["verdict"].iloc[-1].startswith("A/A control")
    assert {"device", "rounds", "batch_size", "model", "augment", "note"} <= set(rows) and rows["augment"].all()


def test_unknown_scale_is_one_clear_line():
    """Only the scratch recipe has a loader-speed budget; another scale is named in one ValueError line."""
    assert loader_speed.budget("scratch").batch_size == 128
    with pytest.raises(ValueError, match=r"scale='quick' is not allowed: expected one of scratch"):
        loader_speed.budget("quick")
