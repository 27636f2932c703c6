import dataclasses
import json

import pandas as pd
import pytest
import torch

from vitstudy import steps, train
from vitstudy.checkpoint import read_checkpoint_index


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, digits_cfg):
    """One finished 2-epoch digits run, trained once for the tests that only read it or load it again."""
    return train.train(digits_cfg, tmp_path_factory.mktemp("digits_run"), progress=False)


def test_training_learns_digits(digits_cfg, tmp_path):
    """Six short epochs on digits beat chance (10%) by far: the loop really trains."""
    cfg = dataclasses.replace(digits_cfg, epochs=6, lr=3e-3, train_size=1024)
    result = train.train(cfg, tmp_path, progress=False)
    assert result.metrics["test_top1"] > 30
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]


def test_metrics_csv_has_one_row_per_epoch(digits_run):
    """metrics.csv holds the per-epoch history with losses, accuracies, lr and throughput."""
    frame = pd.read_csv(digits_run.run_dir / "metrics.csv")
    assert list(frame["epoch"]) == [1, 2]
    assert {"train_loss", "val_top1", "lr", "train_images_per_s"} <= set(frame.columns)


def test_finished_run_is_loaded_not_retrained(digits_run, digits_cfg):
    """Calling train again on a finished run loads it: same weights, same metrics, no new epochs."""
    files = {p.name: p.stat().st_mtime_ns for p in digits_run.run_dir.iterdir()}
    again = train.train(digits_cfg, digits_run.run_dir, progress=False)
    assert again.metrics == digits_run.metrics
    assert torch.equal(digits_run.model.head.weight, again.model.head.weight)
    assert {p.name: p.stat().st_mtime_ns for p in digits_run.run_dir.iterdir()} == files


def test_same_seed_same_result(digits_cfg, tmp_path):
    """Two runs with one seed end with identical metrics."""
    a = train.train(digits_cfg, tmp_path / "a", progress=False)
    b = train.train(digits_cfg, tmp_path / "b", progress=False)
    assert a.history.drop(columns=["seconds", "train_images_per_s"]).equals(
        b.history.drop(columns=["seconds", "train_images_per_s"])
    )


def test_resume_with_other_settings_is_refused(digits_run, digits_cfg):
    """Resuming a run folder with different settings is an error, not a silent mix."""
    with pytest.raises(ValueError, match="other settings"):
        train.train(dataclasses.replace(digits_cfg, lr=5e-3), digits_run.run_dir, progress=False)


def test_mixup_and_label_smoothing_train(digits_cfg, tmp_path):
    """The Table 2 style options (mixup, label smoothing) run and give finite losses."""
    cfg = dataclasses.replace(digits_cfg, mixup=0.1, label_smoothing=0.1, epochs=1)
    result = train.train(cfg, tmp_path, progress=False)
    assert torch.isfinite(torch.tensor(result.history["train_loss"].to_numpy())).all()


def test_warmup_then_cosine_schedule(digits_cfg, tmp_path):
    """The learning rate rises during warm-up, then decays: last epoch's lr is below the peak."""
    cfg = dataclasses.replace(digits_cfg, epochs=3, warmup_epochs=1.0)
    history = train.train(cfg, tmp_path, progress=False).history
    assert history["lr"].iloc[0] == pytest.approx(cfg.lr, rel=0.02)
    assert history["lr"].iloc[-1] < cfg.lr / 2


def test_epoch_hook_sees_every_epoch(digits_cfg, tmp_path):
    """on_epoch_start is called once per epoch with the model."""
    seen = []
    train.train(digits_cfg, tmp_path, progress=False, on_epoch_start=lambda model, epoch: seen.append(epoch))
    assert seen == [0, 1]


def test_checkpoint_records_config(digits_run, digits_cfg):
    """The committed checkpoint carries the resolved config and the last epoch's metrics."""
    index = read_checkpoint_index(digits_run.run_dir)
    assert index["epoch"] == 1 and index["config"] == json.loads(json.dumps(dataclasses.asdict(digits_cfg)))
    assert "val_top1" in index["metrics"]


def test_baseline_is_cached_per_scale(monkeypatch):
    """The baseline of a scale is trained once, then every call loads the same run."""
    from vitstudy.config import Scale

    calls = []
    original = train.train

    def counting_train(cfg, run_dir, **kwargs):
        calls.append(run_dir)
        return original(cfg, run_dir, **kwargs)

    monkeypatch.setattr(train, "train", counting_train)
    scale = Scale(
        "unit",
        train.TrainConfig(
            dataset="digits",
            train_size=128,
            val_size=64,
            epochs=1,
            batch_size=32,
            model_kwargs=dict(depth=1, patch_size=2),
        ),
    )
    first = train.baseline(scale, progress=False)
    second = train.baseline(scale, progress=False)
    assert calls[0] == calls[1] and first.metrics == second.metrics
    assert (calls[0] / "final.json").is_file()


def test_per_class_accuracy_matches_sklearn_recall():
    """Per-class top-1 is each class's recall (sklearn's reference); a class without images is NaN."""
    import numpy as np
    from sklearn.metrics import recall_score

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 200)  # class 3 never occurs
    predictions = np.where(rng.random(200) < 0.7, targets, rng.integers(0, 4, 200))
    table = steps.per_class_accuracy(predictions, targets, ["a", "b", "c", "d"])
    expected = 100 * recall_score(targets, predictions, labels=[0, 1, 2], average=None)
    assert table["class"].tolist() == ["a", "b", "c", "d"]
    assert table["test_images"].tolist() == [*np.bincount(targets).tolist(), 0]
    np.testing.assert_allclose(table["top1"].iloc[:3], expected)
    assert np.isnan(table["top1"].iloc[3])


@pytest.mark.parametrize("damaged", ["checkpoint.json", "final.json"])
def test_a_damaged_run_file_is_one_line_at_the_command_line(
    digits_run, digits_cfg, tmp_path, monkeypatch, capsys, damaged
):
    """`python -m vitstudy train` on a run folder whose metadata file is damaged prints one line naming that file and
    what to do (--no-resume, or delete it), and exits 2; --no-resume then starts over."""
    import shutil
    import types

    from vitstudy import __main__ as cli

    run_dir = tmp_path / "run"
    shutil.copytree(digits_run.run_dir, run_dir)
    (run_dir / damaged).write_text("{\n'epoch': 1}")
    monkeypatch.setattr(cli, "get_scale", lambda name: types.SimpleNamespace(train=digits_cfg))
    assert cli.main(["train", "--run-dir", str(run_dir), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("train: ") and len(error.splitlines()) == 1
    assert str(run_dir / damaged) in error and "--no-resume" in error and "delete" in error
    assert cli.main(["train", "--run-dir", str(run_dir), "--quiet", "--no-resume"]) == 0
