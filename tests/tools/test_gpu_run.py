"""The prepared GPU command at tiny sizes on a CPU: the same steps run and every table names the device and versions.
The hand-run measurements' tables (compile, core sharing) from fake timings."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

import pandas as pd
import torch

from vitstudy.__main__ import main
from vitstudy.files import project_root
from vitstudy.measure import core_sharing
from vitstudy.tools import gpu_run


def test_gpu_command_runs_every_step_tiny_on_the_cpu(tmp_path):
    """``python -m vitstudy gpu --device cpu --tiny`` finishes every step and writes every table, each row with
    the device name and the versions; the CUDA tests are skipped, not failed."""
    out = tmp_path / "gpu"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    # Table 5.3 needs the smoke study: tests/experiments/multiexit covers it. The torchrun step is checked in this
    # process below (its command and its child's line); tests/test_resume_and_torchrun.py runs torchrun for real.
    steps = [s for s in gpu_run.STEPS if s not in ("table_5_3", "torchrun_nccl")]
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


def test_torchrun_step_launches_the_nccl_check_on_one_cpu_process_and_reads_its_line(monkeypatch):
    """On a CPU: one process under ``torchrun --standalone`` running ``python -m vitstudy gpu --nccl-check`` with
    no GPU visible and the project importable; its JSON line read back and checked (1 + ... + processes)."""
    launched = []

    def run(command, env, **kwargs):
        launched.append((command, env))
        line = json.dumps({"backend": "gloo", "world_size": 1, "all_reduce_sum": 1.0})
        return subprocess.CompletedProcess(command, 0, stdout=f"some log line\n{line}\n", stderr="")

    monkeypatch.setattr(gpu_run.subprocess, "run", run)
    table = gpu_run.torchrun_nccl(gpu_run.BUDGETS["tiny"], "cpu")
    (command, env), row = launched[0], table.iloc[0]
    assert command[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        "-m",
        "vitstudy",
        "gpu",
        "--nccl-check",
    ]
    assert env["CUDA_VISIBLE_DEVICES"] == "" and str(project_root()) in env["PYTHONPATH"].split(os.pathsep)
    assert row["correct"] and row["processes"] == 1 and row["backend"] == "gloo" and row["exit_status"] == 0


def test_nccl_check_all_reduces_in_a_process_group_of_one(monkeypatch, capsys):
    """``gpu --nccl-check`` (torchrun's child) joins the group torchrun's variables describe (gloo on a CPU),
    all-reduces its rank + 1 and prints one JSON line; the group is left behind it."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    group = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for name, value in group.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu", "--nccl-check"]) == 0
    assert json.loads(capsys.readouterr().out) == {"backend": "gloo", "world_size": 1, "all_reduce_sum": 1.0}
    assert not torch.distributed.is_initialized()


def test_gpu_command_refuses_cuda_without_a_device(monkeypatch, capsys):
    """Without CUDA, ``--device cuda`` is one line naming the fix, exit status 2."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu"]) == 2
    err = capsys.readouterr().err
    assert "--device cpu --tiny" in err and "Traceback" not in err and err.count("\n") == 1


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
