"""The joint variant's training run, killed with SIGKILL mid-epoch, resumes and ends as an uninterrupted run (the
pattern of tests/test_resume_and_torchrun.py, through experiments.joint_exit.train_joint)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch

from vitstudy.checkpoint import load_weights, read_checkpoint_index

pytestmark = pytest.mark.slow

# The resume test's sizes (depth 12, 32 steps an epoch: about a second an epoch on a CPU, hundreds of times the
# polling interval), with exits after blocks 3, 6 and 9 trained with the backbone from a seeded random start.
SCRIPT = textwrap.dedent(
    """
    import sys

    import torch

    from vitstudy.config import TrainConfig
    from vitstudy.data import build_splits
    from vitstudy.experiments.multiexit.joint_exit import train_joint
    from vitstudy.train import default_model_factory

    cfg = TrainConfig(dataset="digits", train_size=512, val_size=128, epochs=3, batch_size=16, augment=False,
                      model_kwargs={"patch_size": 2}, warmup_epochs=0.5, lr=0.001)
    torch.manual_seed(0)
    start = default_model_factory(cfg, build_splits(cfg))
    train_joint(start, cfg, sys.argv[1], exits=(3, 6, 9))
    """
)
COMPARED = ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "lr"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")


def test_joint_run_killed_mid_epoch_resumes_as_if_uninterrupted(tmp_path):
    """Killed during epoch 2, the joint run loses at most that epoch and ends with the uninterrupted run's metrics
    and weights, exit heads included."""
    script = tmp_path / "train_joint.py"
    script.write_text(SCRIPT)
    reference, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    subprocess.run([sys.executable, str(script), str(reference)], check=True, env=_env(), capture_output=True)

    process = subprocess.Popen(
        [sys.executable, str(script), str(killed)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300  # only turns a hang into a failure: start-up and an epoch take seconds
    while (read_checkpoint_index(killed) or {}).get("epoch") != 0:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "epoch 1's checkpoint never appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert read_checkpoint_index(killed)["epoch"] == 0, "epoch 2 ended before the kill: lengthen the epochs"

    subprocess.run([sys.executable, str(script), str(killed)], check=True, env=_env(), capture_output=True)
    resumed, expected = pd.read_csv(killed / "metrics.csv"), pd.read_csv(reference / "metrics.csv")
    pd.testing.assert_frame_equal(resumed[COMPARED], expected[COMPARED], rtol=1e-6)
    final = json.loads((killed / "final.json").read_text())
    assert final["test_top1"] == pytest.approx(json.loads((reference / "final.json").read_text())["test_top1"])
    weights = load_weights(killed / read_checkpoint_index(killed)["weights"])
    expected_weights = load_weights(reference / read_checkpoint_index(reference)["weights"])
    assert {"exit_heads.0.weight", "exit_heads.2.bias", "vit.head.weight"} <= set(weights)
    for name, value in expected_weights.items():
        torch.testing.assert_close(weights[name], value, msg=name)
