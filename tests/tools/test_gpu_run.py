"""The prepared GPU command at tiny sizes on a CPU: the same steps run and every table names the device and versions.
The hand-run measurements' tables (compile, core sharing) from fake timings."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pandas as pd

from vitstudy.measure import core_sharing
from vitstudy.tools import gpu_run


def test_gpu_command_runs_every_step_tiny_on_the_cpu(tmp_path):
    """``python -m vitstudy gpu --device cpu --tiny`` finishes every step and writes every table, each row with
    the device name and the versions; the CUDA tests are skipped, not failed."""
    out = tmp_path / "gpu"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    # Table 5.3 needs the smoke study: tests/experiments/multiexit covers it.
    steps = [s for s in gpu_run.STEPS if s != "table_5_3"]
    done = subprocess.run(
        [sys.executable, "-m", "vitstudy", "gpu", "--device", "cpu", "--tiny", "--out", str(out), "--only", *steps],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = pd.read_csv(out / "tables" / "19_gpu_run.csv")
    assert list(summary["step"]) == steps and (summary["status"] == "done").all()
    for step in steps:
        table = pd.read_csv(out / "tables" / f"19_gpu_{step}.csv")
        assert len(table) and table["env_device_name"].notna().all() and table["env_torch"].notna().all(), step
    assert pd.read_csv(out / "tables" / "19_gpu_torchrun_nccl.csv")["correct"].all()


def test_gpu_command_refuses_cuda_without_a_device():
    """Without CUDA, ``--device cuda`` is one line naming the fix, exit status 2."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-m", "vitstudy", "gpu"], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "--device cpu --tiny" in done.stderr and "Traceback" not in done.stderr


def test_sharing_table_compares_two_processes_with_one_alone(monkeypatch):
    """Each arm's total over its processes is set against one process alone; the goal is met at >= 0.97 of it."""
    speeds = {(1, False): [(200.0, 2)], (2, False): [(50.0, 2), (45.0, 2)], (2, True): [(101.0, 1), (100.0, 1)]}
    monkeypatch.setattr(core_sharing, "run_arm", lambda budget, processes, sharing: speeds[(processes, sharing)])
    table, raw = core_sharing.sharing_table(core_sharing.budget("smoke"))
    by_arm = table.set_index("arm")
    assert by_arm.loc["two at once, default threads", "total_over_alone"] == 95 / 200
    assert (
        by_arm.loc["two at once, sharing rule", "meets_goal"]
        and not by_arm.loc["two at once, default threads", "meets_goal"]
    )
    assert len(raw) == 6 and by_arm.loc["two at once, sharing rule", "threads_each"] == 1
    assert by_arm.loc[core_sharing.ALONE_COPY, "total_over_alone"] == 1.0


def test_sharing_ratios_pair_each_round_with_that_rounds_process_alone(monkeypatch):
    """A machine that halves its speed between rounds moves every arm alike: the paired ratio does not move."""
    calls = []

    def run_arm(budget, processes, sharing):
        calls.append(processes)
        scale = 1.0 if len(calls) <= len(core_sharing.ARMS) else 0.5  # round 2 runs at half speed
        return [(scale * (200.0 if processes == 1 else 100.0), 1)] * processes

    monkeypatch.setattr(core_sharing, "run_arm", run_arm)
    budget = dataclasses.replace(core_sharing.budget("smoke"), rounds=2)
    by_arm = core_sharing.sharing_table(budget)[0].set_index("arm")
    row = by_arm.loc["two at once, sharing rule"]
    assert row["total_over_alone"] == row["total_over_alone_low"] == row["total_over_alone_high"] == 1.0
