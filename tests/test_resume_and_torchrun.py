"""Subprocess tests: a run killed with SIGKILL mid-epoch resumes; torchrun with 2 CPU processes agrees."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from vitstudy.checkpoint import load_weights, read_checkpoint_index

pytestmark = pytest.mark.slow

# Depth 12, 32 steps an epoch: an epoch lasts about a second on a CPU (a few tenths on a GPU), hundreds of times
# the resume test's polling interval, so its kill lands inside the epoch that follows the checkpoint it waits for.
# Two epochs: the kill lands in the last one, which the resumed run then trains again. The gentle learning rate keeps
# torchrun's float-order differences from being amplified into another run: one uninterrupted run of these settings
# is the reference of both tests (:func:`uninterrupted`).
SETTINGS = [
    "dataset=digits",
    "train_size=512",
    "val_size=128",
    "epochs=2",
    "batch_size=16",
    "augment=false",
    'model_kwargs={"patch_size": 2}',
    "warmup_epochs=0.5",
    "lr=0.0005",
]
COMPARED = ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "lr"]


def _train_command(run_dir, *extra):
    return [sys.executable, "-m", "vitstudy", "train", "--quiet", "--run-dir", str(run_dir), "--set", *SETTINGS, *extra]


def _env():
    # CPU processes on every machine: the tests are sized for a CPU, torchrun's two processes share gloo (a one-GPU
    # machine has no cuda:1), and the comparisons are float-exact.
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")


@pytest.fixture
def uninterrupted(made_once) -> Path:
    """The run folder of one uninterrupted single-process run of :data:`SETTINGS`, trained once per pytest run
    (whichever test asks first; the other reads it)."""

    def train(folder: Path) -> None:
        subprocess.run(_train_command(folder / "run"), check=True, env=_env(), capture_output=True)

    return made_once("uninterrupted-run", train) / "run"


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, uninterrupted):
    """Killed during epoch 2, the resumed run loses at most that epoch and ends as an uninterrupted run."""
    reference = uninterrupted
    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # The signal: epoch 1's checkpoint is committed, so the run has gone on into epoch 2. The deadline is generous
    # (start-up and one epoch take seconds) and only turns a run that hangs into a failure.
    deadline = time.monotonic() + 300
    while (read_checkpoint_index(killed) or {}).get("epoch") != 0:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "epoch 1's checkpoint never appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert read_checkpoint_index(killed)["epoch"] == 0, "epoch 2 ended before the kill: lengthen the epochs"

    subprocess.run(_train_command(killed), check=True, env=_env(), capture_output=True)
    resumed, expected = pd.read_csv(killed / "metrics.csv"), pd.read_csv(reference / "metrics.csv")
    pd.testing.assert_frame_equal(resumed[COMPARED], expected[COMPARED], rtol=1e-6)
    final = json.loads((killed / "final.json").read_text())
    assert final["test_top1"] == pytest.approx(json.loads((reference / "final.json").read_text())["test_top1"])


def test_torchrun_two_cpu_processes_match_one(tmp_path, uninterrupted):
    """torchrun --nproc_per_node 2 (gloo) ends with the weights and metrics of one process, within tolerance."""
    single, double = uninterrupted, tmp_path / "double"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    completed = subprocess.run(
        torchrun + ["-m", "vitstudy", *_train_command(double)[3:]], env=_env(), capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    final = json.loads((double / "final.json").read_text())
    assert final["world_size"] == 2
    weights_single = load_weights(single / read_checkpoint_index(single)["weights"])
    weights_double = load_weights(double / read_checkpoint_index(double)["weights"])
    # Float sums in another order differ in the last bits; Adam turns the near-zero gradient of the key bias
    # (softmax ignores it) into full-size noisy steps, so compare by relative norm, per tensor and overall.
    relative = {
        k: ((weights_double[k] - v).norm() / v.norm().clamp_min(1e-12)).item() for k, v in weights_single.items()
    }
    assert max(relative.values()) < 0.05, max(relative.items(), key=lambda kv: kv[1])
    everything = torch.cat([v.flatten() for v in weights_single.values()])
    difference = torch.cat([(weights_double[k] - v).flatten() for k, v in weights_single.items()])
    assert (difference.norm() / everything.norm()).item() < 1e-3
    metrics_single = pd.read_csv(single / "metrics.csv")
    metrics_double = pd.read_csv(double / "metrics.csv")
    pd.testing.assert_frame_equal(metrics_single[COMPARED], metrics_double[COMPARED], rtol=1e-3, atol=0.1)
