"""The one prepared GPU command: the CUDA tests and every GPU column of the study, in one process, in minutes.

    make gpu                      # = PYTHONPATH=. python -m vitstudy gpu  (one CUDA device, under 10 min)
    python -m vitstudy gpu --device cpu --tiny --out /tmp/g   # the same path at tiny sizes on a CPU (a test)

A lent GPU machine has its own torch, no package registry and no Fashion-MNIST; it runs from the working tree with
``PYTHONPATH=.`` and needs torch, timm, pandas, scipy, safetensors, tabulate and pytest there. Everything else
it makes: random weights and random images for the timed columns, scikit-learn's bundled digits for the CUDA
resume test; Table 5.3's GPU column needs the quick study's data (Fashion-MNIST and the cached quick baseline,
carried as ``data/fashion_mnist`` and ``data/cache/baselines``), else its row says what was missing.

Steps (:data:`STEPS`), each recorded in ``19_gpu_run`` with its status and seconds, a failing one not stopping the
rest: the ``cuda``-marked tests (``tests/test_cuda.py``); Table 5.1 in fp32 and bf16 (notebook 01's function);
Table 5.3's GPU column (notebook 03's); the per-sample exit at batch 1 and 256 beside the plain model and the exit
machinery with nothing exiting (what its host syncs and heads cost); SkipViT Table 1's training throughput in
bf16 at batch 256 with the A/A control and ``max_memory_allocated`` (notebook 04's timing function); a one-process
``torchrun`` NCCL all-reduce. Every table lands in ``<out>/tables/`` (default ``figures/gpu``) with the device
name and versions in every row.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.distributed as dist

from .. import bench, report
from ..config import get_scale
from ..experiments.multiexit import common as multiexit_common
from ..experiments.multiexit import cpu_vs_gpu
from ..experiments.multiexit.real_data_exit import idle_model
from ..experiments.multiexit.study import prepare
from ..experiments.skipvit import common as skipvit_common
from ..files import project_root
from ..measure.compile_speed import operating_threshold
from ..models import create_model
from ..multiexit import DEFAULT_EXITS, MultiExitViT
from ..skipvit import TABLE1

STEPS = ("cuda_tests", "table_5_1", "table_5_3", "per_sample_exit", "table_1_bf16", "torchrun_nccl")
ENVIRONMENT = ("device_type", "device_name", "torch", "timm", "cuda_runtime", "python")  # in every row


@dataclass(frozen=True)
class GpuBudget:
    """The sizes of every GPU column: the GPU's, or tiny ones that run the same path on a CPU in seconds."""

    name: str
    report_model: str = "vit_base_patch16_224"  # the report's ViT-B/16 (random weights: speed only)
    report_input: tuple[int, int, int] = (3, 224, 224)
    table_5_1_batch: int = 64
    study_scale: str = "quick"  # Table 5.3: the quick study (Fashion-MNIST baseline), as notebook 03 at quick
    exit_batches: tuple[int, ...] = (1, 256)
    skipvit_model: str = "vit_small_patch16_224"
    skipvit_input: tuple[int, int, int] = (3, 224, 224)
    skipvit_batch: int = 256
    skipvit_rows: tuple[str, ...] = tuple(TABLE1)
    # ~20 arms x 4 rounds x 0.3 s for Table 1 plus ~10 arms for 5.1: about 5 min of timing, within the 10.
    timing: bench.CompareSettings = bench.CompareSettings(rounds=4, min_run_time=0.3, warmup_calls=3)


BUDGETS = {
    "gpu": GpuBudget("gpu"),
    "tiny": GpuBudget(
        "tiny",
        "vitstudy_tiny_patch4_28",
        (1, 28, 28),
        2,
        "smoke",
        (1, 4),
        "vitstudy_tiny_patch4_28",
        (1, 28, 28),
        4,
        ("baseline", "skip_6_55_s11"),
        bench.SMOKE_TIMING,
    ),
}


def with_environment(frame: pd.DataFrame, device: str) -> pd.DataFrame:
    """``frame`` with the device name and the versions (:data:`ENVIRONMENT`) in every row."""
    env = bench.environment_info(device)
    return frame.assign(**{f"env_{key}": env[key] for key in ENVIRONMENT})


def cuda_tests(budget: GpuBudget, device: str) -> pd.DataFrame:
    """Run ``tests/test_cuda.py`` (marker ``cuda``) in this process with pytest; one row: its exit status."""
    import pytest  # only here: the package does not depend on pytest

    path = project_root() / "tests" / "test_cuda.py"
    status = pytest.main(["-q", "-m", "cuda", "-p", "no:cacheprovider", str(path)])
    return pd.DataFrame(
        [
            {
                "tests": str(path.relative_to(project_root())),
                "pytest_exit_status": int(status),
                "passed": int(status) == 0,
                "cuda_present": torch.cuda.is_available(),
            }
        ]
    )


def table_5_1(budget: GpuBudget, device: str) -> pd.DataFrame:
    """Table 5.1 in fp32 and bf16 (:func:`vitstudy.experiments.multiexit.common.table_5_1`) on the report's model."""
    torch.manual_seed(0)
    vit = create_model(budget.report_model).eval()
    exits = DEFAULT_EXITS if len(vit.blocks) == 12 else (1,)
    table, _ = multiexit_common.table_5_1(
        vit, budget.report_input, budget.table_5_1_batch, exits, budget.timing, device, bf16=True
    )
    return table


def table_5_3(budget: GpuBudget, device: str) -> pd.DataFrame:
    """Table 5.3's GPU column (:func:`.cpu_vs_gpu.table_5_3` on ``device`` alone) on the study of
    ``budget.study_scale``, at notebook 02's threshold and batch."""
    scale = get_scale(budget.study_scale)
    settings = multiexit_common.real_data_budget(scale)
    study = prepare(
        scale,
        variants=cpu_vs_gpu.VARIANTS_5_3,
        exit_sets=settings.table_exit_sets,
        head_epochs=settings.head_epochs,
        device=device,
        progress=False,
    )
    table, _ = cpu_vs_gpu.table_5_3(
        study,
        settings.threshold,
        settings.batch_size,
        budget.timing,
        cpu_vs_gpu.VARIANTS_5_3,
        settings.table_exit_sets,
        settings.policies,
        devices=(device,),
    )
    return table.assign(scale=scale.name)


def per_sample_exit(budget: GpuBudget, device: str) -> pd.DataFrame:
    """The per-sample exit (threshold: the median first-exit confidence, so about half the batch leaves at block
    3) and the exit machinery with nothing exiting, against the plain model, at each of ``budget.exit_batches``."""
    torch.manual_seed(0)
    vit = create_model(budget.report_model).eval()
    exits = DEFAULT_EXITS if len(vit.blocks) == 12 else (1,)
    rows = []
    for batch in budget.exit_batches:
        images = torch.randn(batch, *budget.report_input, generator=torch.Generator().manual_seed(batch))
        per_sample = MultiExitViT(vit, exits, policy="sample").eval()
        per_sample.threshold = operating_threshold(per_sample, images)
        models = {
            "plain": vit,
            "per_sample": per_sample,
            "idle": idle_model(vit) if exits == DEFAULT_EXITS else MultiExitViT(vit, exits, threshold=1.0).eval(),
        }
        comparison = bench.compare_models(models, images, budget.timing, device)
        labels = {
            "plain": "plain",
            "per_sample": "per-sample exit, about half leave at the first exit",
            "idle": "exit machinery, nothing exits (its host syncs and heads)",
        }
        for name in [*models, comparison.control]:
            speed = (
                bench.control_row(comparison, batch)
                if name == comparison.control
                else bench.speed_row(comparison, name, batch, 1.0, bench.NO_OVERHEAD_TARGET)
            )
            rows.append(
                {
                    "batch_size": batch,
                    "arm": labels.get(name, name),
                    **speed,
                    "threshold": per_sample.threshold,
                    **bench.protocol(comparison),
                    "note": bench.table_note(comparison),
                }
            )
    return pd.DataFrame(rows)


def table_1_bf16(budget: GpuBudget, device: str) -> pd.DataFrame:
    """SkipViT Table 1's training steps on ViT-S/16 in bf16 (:func:`vitstudy.experiments.skipvit.common.timing_runs`,
    fp32 beside it), with each row's peak memory of one bf16 training step (``torch.cuda.max_memory_allocated``)."""
    rows = {name: TABLE1[name] for name in budget.skipvit_rows}
    table, _ = skipvit_common.timing_runs(
        budget.skipvit_model,
        budget.skipvit_input,
        1000,
        budget.skipvit_batch,
        budget.timing,
        rows,
        device,
        bf16_rows=list(rows),
    )
    memory = {}
    for name, settings in rows.items():
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        step = skipvit_common.training_step_arm(
            budget.skipvit_model, settings, budget.skipvit_input, 1000, budget.skipvit_batch, device, precision="bf16"
        )
        step(), step()
        cuda = torch.device(device).type == "cuda"
        memory[name] = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan")
        del step
    return table.assign(bf16_max_memory_allocated_mib=table["row"].map(memory))


def nccl_check() -> dict[str, object]:
    """Inside ``torchrun``: join the process group (NCCL on CUDA, gloo on a CPU), all-reduce each rank's number."""
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    value = torch.tensor([float(dist.get_rank() + 1)], device=f"cuda:{local}" if cuda else "cpu")
    dist.all_reduce(value)
    result = {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "all_reduce_sum": value.item()}
    dist.destroy_process_group()
    return result


def torchrun_nccl(budget: GpuBudget, device: str) -> pd.DataFrame:
    """``torchrun --standalone`` with one process per CUDA device (one on a CPU) running :func:`nccl_check`."""
    count = max(1, torch.cuda.device_count()) if torch.device(device).type == "cuda" else 1
    path = os.pathsep.join(filter(None, [str(project_root()), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    if torch.device(device).type != "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(count),
        "-m",
        "vitstudy",
        "gpu",
        "--nccl-check",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    expected = count * (count + 1) / 2
    return pd.DataFrame(
        [
            {
                "processes": count,
                "exit_status": done.returncode,
                **(results[0] if results else {}),
                "correct": bool(results) and all(r["all_reduce_sum"] == expected for r in results),
                "stderr_tail": done.stderr[-300:] if done.returncode else "",
            }
        ]
    )


STEP_FUNCTIONS: dict[str, Callable[[GpuBudget, str], pd.DataFrame]] = {
    "cuda_tests": cuda_tests,
    "table_5_1": table_5_1,
    "table_5_3": table_5_3,
    "per_sample_exit": per_sample_exit,
    "table_1_bf16": table_1_bf16,
    "torchrun_nccl": torchrun_nccl,
}


def run_gpu(
    budget: GpuBudget, device: str = "cuda", out: str | None = None, steps=STEPS, log: Callable[[str], None] = print
) -> pd.DataFrame:
    """Run every step on ``device``, write each table as ``19_gpu_<step>`` and the summary as ``19_gpu_run`` under
    ``out`` (default ``figures/gpu``); returns the summary (one row per step: status, seconds, error)."""
    folder = out or project_root() / "figures" / "gpu"
    summary = []
    for step in steps:
        started = time.perf_counter()
        try:
            table = STEP_FUNCTIONS[step](budget, device)
            report.save_table(with_environment(table, device), f"19_gpu_{step}", out=folder, floatfmt=".3f")
            status, error = "done", ""
        except Exception as err:  # a failed column must not cost the others: the summary names it
            status, error = "failed", f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
            traceback.print_exc()
        seconds = time.perf_counter() - started
        log(f"gpu: {step} {status} in {seconds:.0f} s {error}")
        summary.append(
            {
                "step": step,
                "status": status,
                "seconds": seconds,
                "error": error,
                "budget": budget.name,
                **dataclasses.asdict(budget) | {"timing": str(budget.timing)},
            }
        )
    frame = with_environment(pd.DataFrame(summary), device)
    report.save_table(frame, "19_gpu_run", out=folder)
    return frame
