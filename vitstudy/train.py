"""One training loop for every experiment: AdamW, warm-up + cosine, optional mixup / label smoothing, AMP on GPU.

The same code runs in one process or under ``torchrun`` (DDP: gloo on CPU, NCCL on GPU). Each epoch reseeds
every generator from ``(seed, epoch)``, so a run resumed from its last checkpoint draws exactly what an
uninterrupted run would have drawn, and the two end with the same metrics.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .bench import environment_info
from .checkpoint import load_checkpoint, read_checkpoint_index, read_run_json, save_checkpoint
from .config import Scale, TrainConfig, get_scale
from .data import Splits, build_splits
from .distributed import Dist, all_reduce_sum, barrier, init_distributed
from .fast_data import TensorLoader, make_batches
from .files import atomic_path, atomic_write_json, cache_dir, fingerprint
from .models import create_model
from .progress import EpochProgress
from .steps import autocast, evaluate
from .threads import share_cores

METRICS_FILE = "metrics.csv"
FINAL_FILE = "final.json"

ModelFactory = Callable[[TrainConfig, Splits], nn.Module]
EpochHook = Callable[[nn.Module, int], None]
LossFn = Callable[[Any, torch.Tensor, nn.Module], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrainResult:
    """A trained model with its per-epoch history and final metrics (test top-1 among them)."""

    model: nn.Module
    history: pd.DataFrame
    metrics: dict[str, Any]
    run_dir: Path
    splits: Splits

    def summary(self) -> dict[str, Any]:
        """One flat results row: settings, sizes, time, accuracy, and where it ran."""
        cfg = self.metrics["config"]
        device = next(self.model.parameters()).device
        return {
            "model": cfg["model"],
            "parameters_m": sum(p.numel() for p in self.model.parameters()) / 1e6,
            "dataset": cfg["dataset"],
            "train_images": self.metrics["sizes"]["train"],
            "test_images": self.metrics["sizes"]["test"],
            "epochs": cfg["epochs"],
            "batch_size": cfg["batch_size"],
            "seed": cfg["seed"],
            "train_minutes": self.metrics["train_seconds"] / 60,
            "val_top1": self.metrics["val_top1"],
            "test_top1": self.metrics["test_top1"],
            **{k: v for k, v in environment_info(device).items() if k in ("device_name", "torch", "timm")},
        }


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed python, numpy (timm's Mixup draws from it) and torch from (seed, epoch, rank)."""
    value = (seed * 1_000_003 + epoch * 1_009 + rank) % 2**32
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def config_fingerprint(cfg: TrainConfig) -> str:
    """Short stable hash of a config: names cached runs, detects a resume against different settings."""
    settings = dataclasses.asdict(cfg)
    settings.pop("loader")  # both loaders give the same batches: the same run, whichever made them
    return fingerprint(settings, length=10)


def default_model_factory(cfg: TrainConfig, splits: Splits) -> nn.Module:
    channels, height, width = splits.input_size
    kwargs: dict[str, Any] = dict(num_classes=splits.num_classes, drop_path_rate=cfg.drop_path)
    if cfg.dataset != "imagefolder":
        kwargs.update(in_chans=channels, img_size=(height, width))
    return create_model(cfg.model, **{**kwargs, **cfg.model_kwargs})


# ----------------------------------------------------------------------------------------------------------
# The loop, split as timm's train.py splits it: set-up, one epoch, validation (``evaluate``), finish.


@dataclass
class TrainingRun:
    """One run's state between epochs: built by ``_setup``, advanced by ``train_one_epoch``, closed by ``_finish``."""

    cfg: TrainConfig
    run_dir: Path
    world: Dist
    splits: Splits
    train_loader: TensorLoader | DataLoader  # vitstudy.fast_data: the same batches either way
    val_loader: TensorLoader | DataLoader
    test_loader: TensorLoader | DataLoader
    model: nn.Module
    ddp_model: nn.Module  # the model itself in one process; its DistributedDataParallel wrapper under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    mixup: Mixup | None
    criterion: nn.Module
    scaler: torch.amp.GradScaler
    use_amp: bool
    fingerprint: str
    start_epoch: int = 0  # the first epoch still to train (> 0 after a resume)
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics row per finished epoch
    loss_fn: LossFn | None = None  # None: the criterion on the model's logits

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)


def train(
    cfg: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    progress: bool = True,
    device: str | torch.device | None = None,
    model_factory: ModelFactory = default_model_factory,
    on_epoch_start: EpochHook | None = None,
    loss_fn: LossFn | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (checkpoint every epoch), resuming from its last checkpoint if any.

    A run that already finished is loaded, not retrained. ``on_epoch_start(model, epoch)`` lets a method
    change the model between epochs (e.g. switch token dropping on after its warm-up). ``loss_fn(output, targets,
    criterion) -> (loss, logits train top-1 counts)`` takes a training forward's output (e.g. every exit's logits).
    """
    run = _setup(cfg, Path(run_dir), resume=resume, device=device, model_factory=model_factory)
    run.loss_fn = loss_fn
    for epoch in range(run.start_epoch, cfg.epochs):
        share_cores()  # this epoch's share of the cores among the package's running processes (vitstudy.threads)
        seed_epoch(cfg.seed, epoch, run.world.rank)
        run.train_loader.sampler.set_epoch(epoch)
        if on_epoch_start is not None:
            on_epoch_start(run.model, epoch)
        stats = train_one_epoch(run, epoch, progress=progress)
        _end_epoch(run, epoch, stats)
    return _finish(run)


def _setup(
    cfg: TrainConfig, run_dir: Path, *, resume: bool, device: str | torch.device | None, model_factory: ModelFactory
) -> TrainingRun:
    """Data, loaders, model, optimizer, schedule and loss of ``cfg``; the last checkpoint loaded when resuming."""
    world = init_distributed(device)
    splits = build_splits(cfg)
    if cfg.batch_size % world.world_size:
        raise ValueError(
            f"batch_size={cfg.batch_size} is not divisible by the {world.world_size} torchrun processes: "
            "batch_size is the global batch, split evenly over processes"
        )
    local_batch = cfg.batch_size // world.world_size
    shard = dict(rank=world.rank, world_size=world.world_size, loader=cfg.loader, device=world.device)
    train_loader = make_batches(
        splits.train, local_batch, train=True, seed=cfg.seed, num_workers=cfg.num_workers, **shard
    )
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the {len(splits.train)} training images")
    val_loader = make_batches(splits.val, local_batch * 2, train=False, **shard)
    test_loader = make_batches(splits.test, local_batch * 2, train=False, **shard)

    seed_epoch(cfg.seed, -1)  # weight initialisation depends on the seed alone
    model = model_factory(cfg, splits).to(world.device)
    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=cfg.epochs * steps_per_epoch,
        lr_min=cfg.min_lr,
        warmup_t=round(cfg.warmup_epochs * steps_per_epoch),
        warmup_lr_init=cfg.warmup_lr,
        warmup_prefix=True,
        t_in_epochs=False,  # stepped per update: short runs need a smooth warm-up, not an epoch staircase
    )
    mixup = (
        Mixup(mixup_alpha=cfg.mixup, label_smoothing=cfg.label_smoothing, num_classes=splits.num_classes)
        if cfg.mixup > 0
        else None
    )
    criterion = SoftTargetCrossEntropy() if mixup else nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    use_amp = cfg.amp and world.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())

    fingerprint = config_fingerprint(cfg)
    start_epoch, history = 0, []
    index = read_checkpoint_index(run_dir) if resume else None
    if index is not None:
        if index.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{run_dir} holds a run with other settings (fingerprint {index.get('fingerprint')} != "
                f"{fingerprint}): use a new run_dir or resume=False"
            )
        load_checkpoint(run_dir, model, optimizer)
        start_epoch = index["epoch"] + 1
        history = _read_history(run_dir, up_to_epoch=index["epoch"])

    ddp_model = model
    if world.world_size > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[world.device.index] if world.device.type == "cuda" else None
        )
    return TrainingRun(
        cfg,
        run_dir,
        world,
        splits,
        train_loader,
        val_loader,
        test_loader,
        model,
        ddp_model,
        optimizer,
        scheduler,
        mixup,
        criterion,
        scaler,
        use_amp,
        fingerprint,
        start_epoch,
        history,
    )


def train_one_epoch(run: TrainingRun, epoch: int, progress: bool = True) -> dict[str, float]:
    """One pass over this process's training shard: mean loss, top-1 (%), seconds and images/s over all ranks."""
    cfg, world, model = run.cfg, run.world, run.ddp_model
    model.train()
    started = time.perf_counter()
    totals = torch.zeros(3, dtype=torch.float64, device=world.device)  # [loss sum, correct, count]
    bar = tqdm(
        run.train_loader,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        leave=False,
        disable=not (progress and world.is_main),
    )
    lines = EpochProgress(epoch, cfg.epochs, len(run.train_loader.sampler), active=world.is_main)  # for the report
    for step, (images, targets) in enumerate(bar):
        images, targets = images.to(world.device, non_blocking=True), targets.to(world.device, non_blocking=True)
        hard_targets = targets
        if run.mixup is not None:
            images, targets = run.mixup(images, targets)
        with autocast(world.device, run.use_amp):
            output = model(images)
            loss, logits = (
                run.loss_fn(output, targets, run.criterion) if run.loss_fn else (run.criterion(output, targets), output)
            )
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if cfg.grad_clip:
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step_update(epoch * run.steps_per_epoch + step + 1)
        totals += torch.stack(
            [
                loss.detach().double() * len(images),
                (logits.detach().argmax(-1) == hard_targets).sum().double(),
                torch.tensor(float(len(images)), dtype=torch.float64, device=world.device),
            ]
        )
        if world.is_main and step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        lines.step(len(images))
    seconds = time.perf_counter() - started
    loss_sum, correct, count = all_reduce_sum(totals, world).tolist()
    stats = dict(loss=loss_sum / count, top1=100.0 * correct / count, seconds=seconds, images_per_s=count / seconds)
    lines.done(stats)
    return stats


def _end_epoch(run: TrainingRun, epoch: int, stats: dict[str, float]) -> None:
    """Validate, append the epoch's metrics row, and commit metrics.csv plus a checkpoint (main process)."""
    val = evaluate(run.model, run.val_loader, run.world.device, run.world, run.use_amp) if len(run.splits.val) else {}
    row = {
        "epoch": epoch + 1,
        "train_loss": stats["loss"],
        "train_top1": stats["top1"],
        "val_loss": val.get("loss", float("nan")),
        "val_top1": val.get("top1", float("nan")),
        "lr": run.optimizer.param_groups[0]["lr"],
        "seconds": stats["seconds"],
        "train_images_per_s": stats["images_per_s"],
    }
    run.history.append(row)
    if run.world.is_main:
        _write_history(run.run_dir, run.history)
        meta = {"epoch": epoch, "fingerprint": run.fingerprint, "config": dataclasses.asdict(run.cfg), "metrics": row}
        save_checkpoint(run.run_dir, run.model, run.optimizer, meta)
    barrier(run.world)  # no rank may start the next epoch (or finish) before the checkpoint is committed


def _finish(run: TrainingRun) -> TrainResult:
    """Test the trained model once and write final.json; a run that had finished before keeps its metrics."""
    cfg, world = run.cfg, run.world
    final_path = run.run_dir / FINAL_FILE
    if run.start_epoch >= cfg.epochs and final_path.is_file():
        metrics = read_run_json(final_path)  # finished earlier: the loaded weights are the final ones
    else:
        test = evaluate(run.model, run.test_loader, world.device, world, run.use_amp)
        last = run.history[-1] if run.history else {}
        metrics = {
            "test_top1": test["top1"],
            "test_loss": test["loss"],
            "val_top1": last.get("val_top1"),
            "epochs": cfg.epochs,
            "train_seconds": float(sum(r["seconds"] for r in run.history)),
            "world_size": world.world_size,
            "sizes": run.splits.sizes(),
            "fingerprint": run.fingerprint,
            "config": dataclasses.asdict(cfg),
        }
        if world.is_main:
            atomic_write_json(final_path, metrics)
        barrier(world)
    return TrainResult(run.model.eval(), pd.DataFrame(run.history), metrics, run.run_dir, run.splits)


def _write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(run_dir / METRICS_FILE) as tmp:
        pd.DataFrame(history).to_csv(tmp, index=False)


def _read_history(run_dir: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    # metrics.csv is written just before checkpoint.json: a kill between the two leaves one row too many.
    return frame[frame["epoch"] <= up_to_epoch + 1].to_dict("records")


def baseline_run_dir(scale: Scale, seed: int = 0) -> Path:
    cfg = dataclasses.replace(scale.train, seed=seed)
    return cache_dir() / "baselines" / f"{scale.name}-{cfg.model}-{config_fingerprint(cfg)}-seed{seed}"


def baseline(scale: Scale | str | None = None, seed: int = 0, progress: bool = True) -> TrainResult:
    """The default baseline model of a scale: trained once, then loaded from the cache by every notebook."""
    scale = get_scale(scale) if not isinstance(scale, Scale) else scale
    cfg = dataclasses.replace(scale.train, seed=seed)
    return train(cfg, baseline_run_dir(scale, seed), resume=True, progress=progress)
