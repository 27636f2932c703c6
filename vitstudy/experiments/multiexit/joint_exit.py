"""Notebooks 02 and 07's ``joint`` variant: the exits trained together with the backbone (issue 18).

The study's model (notebook 00's cached baseline; the report's ViT-B/16 at ``paper`` scale) gets a classifier after
blocks 3, 6 and 9 and trains a few more epochs with deep supervision and self-distillation from its final head
(:mod:`vitstudy.multiexit.joint`), through the package's one resumable training loop (:func:`vitstudy.train.train`:
a safetensors + JSON checkpoint every epoch, resumed after a kill). The run and the trained backbone's recorded
features are cached under ``data/cache/multiexit/``, so a re-run loads them. :func:`add_joint_variant` puts the
variant into a notebook's :class:`~vitstudy.multiexit.ExitStudy`, beside the heads fitted on the frozen backbone.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ...config import PAPER_SMOKE, Scale, TrainConfig, check, scale_budget
from ...files import cache_dir, fingerprint
from ...multiexit import (
    DEFAULT_EXITS,
    DISTILL_TEMPERATURE,
    DISTILL_WEIGHT,
    ExitStudy,
    JointExitViT,
    add_joint,
    exits_label,
    study_config,
    study_model_name,
    training_loss,
)
from ...train import TrainResult, config_fingerprint, train

HISTORY_HEAD = "backbone + every head (joint loss)"  # the joint run's rows in the study's head history


@dataclass(frozen=True)
class JointBudget:
    """How the ``joint`` variant trains at one scale: a few epochs from the study's model, every head at once.

    It starts from the study's model, not from scratch: the frozen-head variants read that model's backbone and are
    judged against it as the plain model, so starting there isolates what training the exits with the backbone adds,
    and costs a few epochs instead of a whole training run (a from-scratch joint run would also change the
    backbone every other variant is compared on). The rate is below the scale's peak: a fine-tune, not a restart
    that would first undo the trained backbone. The loss's constants are LGViT's (``multiexit.joint``)."""

    scale: str
    epochs: int
    lr: float
    warmup_epochs: float = 0.25  # from 1e-6, a quarter epoch: the new loss's first gradients do not hit full rate
    exits: tuple[int, ...] = DEFAULT_EXITS  # the report's exits; any subset of them is a setting of the study
    note: str = ""

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        check(self.lr > 0, "lr", self.lr, "a positive number")
        check(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", self.warmup_epochs, "0 ... epochs")
        check(len(self.exits) >= 1, "exits", self.exits, "at least one block")


BUDGETS: dict[str, JointBudget] = {
    # Smoke: one epoch of the smoke baseline's 512 images, at half its rate: CI, the numbers mean nothing.
    "smoke": JointBudget("smoke", epochs=1, lr=5e-4, warmup_epochs=0.5, note="CI: seconds, numbers meaningless"),
    # Quick: 3 epochs, half the baseline's 6 (its 10k images at batch 64), at half its peak rate (1e-3 of 2e-3): the
    # early blocks get as many updates again as the second half of their own training, and notebook 02 stays within
    # minutes on a 2-core CPU. The frozen heads' budget is one pass to record features plus 30 epochs of linear
    # heads; a backbone cannot learn in one pass, so "a few epochs" is the closest like-for-like.
    "quick": JointBudget("quick", epochs=3, lr=1e-3, note="half the baseline's epochs, at half its peak rate"),
    # Full: 5 of the baseline's 30 epochs (55k images), half its rate (1e-3).
    "full": JointBudget("full", epochs=5, lr=5e-4, warmup_epochs=0.5, note="a sixth of the baseline's epochs"),
    # Paper: the pretrained ViT-B/16 on ImageNet, one epoch (GPUs: hours) at LGViT's exit-training rate (5e-5, from
    # its scripts/train_distillation_deit.sh), where LGViT trains its exits 50 epochs on CIFAR / ImageNet.
    "paper": JointBudget("paper", epochs=1, lr=5e-5, note="one ImageNet epoch at LGViT's rate: GPUs"),
    PAPER_SMOKE: JointBudget(PAPER_SMOKE, epochs=1, lr=5e-5, warmup_epochs=0.5, note="a test on a CPU"),
}


def budget(scale: Scale | str | None = None) -> JointBudget:
    """The joint variant's budget at a scale (:func:`vitstudy.config.scale_budget`)."""
    return scale_budget(BUDGETS, scale)


def joint_config(scale: Scale, budget: JointBudget) -> TrainConfig:
    """The study's own training settings (same data, splits and seed) with the budget's epochs and rate; plain
    cross-entropy at every head (no mixup, no label smoothing), as the frozen heads are fitted."""
    return dataclasses.replace(
        study_config(scale),
        epochs=budget.epochs,
        lr=budget.lr,
        warmup_epochs=budget.warmup_epochs,
        mixup=0.0,
        label_smoothing=0.0,
    )


def loss_settings(exits: tuple[int, ...]) -> dict[str, Any]:
    """What the joint loss computes, beside the training settings: a run trained otherwise gets its own folder."""
    return {
        "exits": list(exits),
        "temperature": DISTILL_TEMPERATURE,
        "weight": DISTILL_WEIGHT,
        "loss": "final CE + per exit (1 - weight) CE + weight T^2 KL(final || exit)",
    }


def run_dir(scale: Scale, budget: JointBudget) -> Path:
    """Cache folder of a scale's joint run: ``data/cache/multiexit/joint-<study model>-<settings>-<loss>``."""
    tag = fingerprint(loss_settings(budget.exits), length=8)
    config = config_fingerprint(joint_config(scale, budget))
    return cache_dir() / "multiexit" / f"joint-{study_model_name(scale)}-{config}-{tag}"


def train_joint(
    start: torch.nn.Module,
    cfg: TrainConfig,
    folder: Path,
    exits: tuple[int, ...] = DEFAULT_EXITS,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train a copy of ``start`` with a classifier after each of ``exits``, every head and the backbone together,
    into ``folder`` (resumed from its last checkpoint; a finished run is loaded). ``result.model`` is the
    :class:`~vitstudy.multiexit.JointExitViT`."""

    def factory(cfg: TrainConfig, splits: Any) -> JointExitViT:
        return JointExitViT(copy.deepcopy(start), exits)  # a copy: ``start`` stays the plain model

    return train(cfg, folder, progress=progress, device=device, model_factory=factory, loss_fn=training_loss)


def training_history(result: TrainResult, exits: tuple[int, ...]) -> pd.DataFrame:
    """The joint run's per-epoch rows in the study's head-history columns (``loss`` is the joint loss, summed
    over every head: not comparable with one head's cross-entropy)."""
    history = result.history.rename(columns={"train_loss": "loss"})
    return history[["epoch", "loss", "train_top1", "val_top1"]].assign(head=HISTORY_HEAD, exits=exits_label(exits))


def add_joint_variant(
    study: ExitStudy,
    budget: JointBudget | None = None,
    device: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or load) the scale's joint run from the study's model, record its backbone's features and add the
    ``joint`` variant at every exit set the study holds whose exits were trained; returns the training result."""
    budget = budget or scale_budget(BUDGETS, study.scale)
    folder = run_dir(study.scale, budget)
    result = train_joint(study.vit, joint_config(study.scale, budget), folder, budget.exits, progress, device)
    trained = set(budget.exits)
    exit_sets = [exits for exits in dict.fromkeys(e for _, e in study.models) if set(exits) <= trained]
    check(bool(exit_sets), "exits", budget.exits, f"exits covering one of the study's exit sets {list(study.models)}")
    add_joint(
        study, result.model, exit_sets, folder.name, training_history(result, budget.exits), device or "cpu", progress
    )
    return result
