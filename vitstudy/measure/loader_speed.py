"""Does the in-memory tensor path (:class:`vitstudy.fast_data.TensorLoader`) speed up training?

A hand-run measurement (a timing is no pass/fail on a shared CPU): on a QUIET machine, run

    python -m vitstudy measure loader_speed

It times training steps of the from-scratch study's model (width 64, 2 heads) with augmentation, fed by the
DataLoader path (0 workers, the in-memory default), the DataLoader with worker processes, the tensor path, and the
same step on one fixed batch (no loader at all), with an A/A copy of the DataLoader arm, by the comparison engine.
The paths change no FLOPs, so a path's ideal speed-up is the no-loader arm's: what removing all loading work gives.
:func:`measure` writes ``figures/tables/08_fast_loader_cpu.{csv,md}`` with the machine and its load average.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd
import torch

from .. import bench, report
from ..config import TrainConfig, get_scale, scale_budget
from ..data import build_splits, make_loader
from ..fast_data import TensorLoader
from ..files import project_root
from ..steps import random_batch_step, training_step
from ..train import default_model_factory

BASELINE = "dataloader"
NO_LOADER = "fixed batch (no loader)"
# A path "meets" the no-loader bound when its measured ÷ ideal is within 5%: what is left of the loading cost.
TARGET = bench.RESOLVED_BAND


@dataclass(frozen=True)
class LoaderSpeedBudget:
    """How the loader paths are timed at one scale (its training recipe, augmentation switched on)."""

    scale: str
    batch_size: int
    timing: bench.CompareSettings
    workers: tuple[int, ...] = (1,)  # DataLoader arms with worker processes; one is all a 2-core CPU can spare


BUDGETS: dict[str, LoaderSpeedBudget] = {
    # 11 balanced rounds of >= 2 s per arm: a ~0.3 s step gets several calls per block and a tight interval.
    "scratch": LoaderSpeedBudget("scratch", batch_size=128, timing=bench.CompareSettings(rounds=11, min_run_time=2.0)),
}


def budget(scale: str) -> LoaderSpeedBudget:
    """The loader-speed budget of ``scale`` (:func:`vitstudy.config.scale_budget`)."""
    return scale_budget(BUDGETS, scale)


def endless_batches(loader: TensorLoader | torch.utils.data.DataLoader) -> Iterator[tuple[torch.Tensor, ...]]:
    """The loader's batches epoch after epoch (``set_epoch(0)``, ``(1)``, ...), as the training loop draws them."""
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader


def loader_step(loader, model: torch.nn.Module, device: str | torch.device) -> Callable[[], torch.Tensor]:
    """A no-argument :func:`~vitstudy.steps.training_step` (AdamW) on the loader's next batch, moved to ``device``."""
    optimizer = torch.optim.AdamW(model.parameters())
    batches = endless_batches(loader)

    def step() -> torch.Tensor:
        images, targets = next(batches)
        return training_step(model, optimizer, images.to(device), targets.to(device))

    return step


def loader_speed(
    cfg: TrainConfig,
    batch_size: int,
    settings: bench.CompareSettings,
    workers: tuple[int, ...] = (1,),
    device: str | torch.device | None = None,
) -> tuple[pd.DataFrame, bench.Comparison]:
    """Training steps of ``cfg``'s model fed by each path, timed against the DataLoader path (0 workers).

    One row per arm: :func:`~vitstudy.bench.speed_row` against the no-loader arm's speed-up as the ideal, the
    protocol, the batch, the model and the table note; and the comparison itself (raw times).
    """
    device = torch.device(device or bench.default_device())
    splits = build_splits(cfg)
    torch.manual_seed(cfg.seed)
    model = default_model_factory(cfg, splits).to(device).train()

    def dataloader(count: int) -> torch.utils.data.DataLoader:
        return make_loader(splits.train, batch_size, train=True, seed=cfg.seed, num_workers=count)

    def arm(loader) -> Callable[[], torch.Tensor]:
        return loader_step(loader, copy.deepcopy(model), device)

    arms = {BASELINE: arm(dataloader(0))}
    arms |= {f"dataloader, {count} worker(s)": arm(dataloader(count)) for count in workers}
    arms["tensor"] = arm(TensorLoader(splits.train, batch_size, train=True, seed=cfg.seed, device=device))
    arms[NO_LOADER] = random_batch_step(copy.deepcopy(model), batch_size, splits.input_size, splits.num_classes, device)
    arms[bench.control_arm(BASELINE)] = arm(dataloader(0))
    work = bench.BaselineWork.training_step(bench.flops_per_image(model, splits.input_size))  # its FLOP/s vs the peak
    comparison = bench.compare(arms, BASELINE, bench.control_arm(BASELINE), settings, device, work=work)
    ideal = comparison.speedup(NO_LOADER)["speedup"]
    rows = [
        {"arm": name, **bench.speed_row(comparison, name, batch_size, ideal, TARGET)}
        if name != comparison.control
        else {"arm": name, **bench.control_row(comparison, batch_size)}
        for name in arms
    ]
    frame = pd.DataFrame(rows).assign(
        **bench.protocol(comparison),
        batch_size=batch_size,
        model=cfg.model,
        augment=cfg.augment,
        note=bench.table_note(comparison),
    )
    return frame, comparison


def measure(scale: str = "scratch") -> None:
    """Time the loader paths at ``scale``'s recipe with augmentation and write ``08_fast_loader_cpu``."""
    chosen = budget(scale)
    cfg = dataclasses.replace(get_scale(scale).train, augment=True)
    load = os.getloadavg()[0]
    rows, _ = loader_speed(cfg, chosen.batch_size, chosen.timing, chosen.workers)
    recipe = ", ".join(f"{key} {value}" for key, value in cfg.model_kwargs.items())
    rows = rows.assign(
        model=f"{cfg.model} ({recipe}: the {scale} recipe)",
        machine=f"{os.cpu_count()}-core machine, load average {load:.2f} at the start",
    )
    report.save_table(rows, "08_fast_loader_cpu", out=project_root() / "figures")
    print(rows[["arm", "images_per_s", "speedup", "speedup_low", "speedup_high", "verdict", "note"]].to_string())
