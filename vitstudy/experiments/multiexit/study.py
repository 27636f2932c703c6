"""The multi-exit study's plumbing: which model and data a scale studies, where its recordings are cached, and how
an :class:`~vitstudy.multiexit.ExitStudy` is built from them.

The method core (:mod:`vitstudy.multiexit`) holds the method: the multi-exit model, its heads, the offline
``ExitStudy`` that evaluates any setting from recorded features. What a study is *of* is the experiments'
business, so it lives here and the core takes its results as arguments: a scale's model (the cached baseline, or at
``paper`` scale the report's pretrained ViT-B/16 on ImageNet, :func:`study_model`), its training settings
(:func:`study_config`), the cache files of its recorded features and fitted heads (:func:`record_path`,
:func:`heads_path`), the study itself (:func:`prepare` for a scale, :func:`build_study` for any model), and the
paired interval of the points a setting loses on the same images (:func:`paired_loss_interval`, the one bootstrap
of ``vitstudy.bench``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import torch

from ... import bench
from ...config import Scale, TrainConfig, check, check_choice, get_scale
from ...data import Splits, build_splits
from ...files import cache_dir
from ...models import create_model
from ...multiexit import (
    EXIT_SETS,
    FROZEN_VARIANTS,
    ExitStudy,
    MultiExitViT,
    exit_costs,
    exits_label,
    fitted_heads,
    recorded_features,
)
from ...train import baseline, baseline_run_dir

PAPER_MODEL = "vit_base_patch16_224"  # the report's model, with timm's ImageNet-1k weights
# The report's sizes: heads fitted on 50k ImageNet training images, 10k held out, 10k of val/ as the test set.
PAPER_SIZES = dict(train_size=50_000, val_size=10_000, test_size=10_000)
# At smoke sizes (config.paper_smoke) the scale's handful of training and test images, and two to choose on.
PAPER_SMOKE_SIZES = dict(val_size=2)
SPLITS = ("train", "val", "test")  # every split a study records


def study_config(scale: Scale) -> TrainConfig:
    """The training settings whose splits a scale's study uses: the baseline's; at ``paper`` scale the report's
    model on its sizes (50k ImageNet training images to fit heads, 10k held out, 10k of val/ as the test set)."""
    if scale.name == "paper":
        sizes = PAPER_SMOKE_SIZES if scale.smoke_sizes else PAPER_SIZES
        return dataclasses.replace(scale.train, model=PAPER_MODEL, augment=False, **sizes)
    return scale.train


def study_model(scale: Scale, progress: bool = True) -> tuple[torch.nn.Module, Splits]:
    """The model and data of a scale: the cached baseline; at ``paper`` scale the pretrained ViT-B on ImageNet.

    ``paper`` follows the report: timm's ``vit_base_patch16_224`` with ImageNet-1k weights (:func:`study_config`).
    """
    if scale.name == "paper":
        return create_model(PAPER_MODEL, pretrained=True).eval(), build_splits(study_config(scale))
    result = baseline(scale, progress=progress)
    return result.model.eval(), result.splits


def study_model_name(scale: Scale) -> str:
    """How cache files name a scale's study model: the baseline run's folder, or the report's pretrained model."""
    model = f"paper-{PAPER_MODEL}" if scale.name == "paper" else baseline_run_dir(scale).name
    return model + ("-smoke_sizes" if scale.smoke_sizes else "")  # never mistaken for the real scale's recording


def record_path(model_name: str, split: str, exits: Sequence[int]) -> Path:
    """Where the features of ``model_name`` on ``split`` at ``exits`` are cached."""
    return cache_dir() / "multiexit" / f"{model_name}-{split}-exits{'_'.join(map(str, exits))}.safetensors"


def record_files(model_name: str, exits: Sequence[int]) -> dict[str, Path]:
    """Where the features of ``model_name`` at ``exits`` are cached, per split (:func:`record_path`)."""
    return {split: record_path(model_name, split, exits) for split in SPLITS}


def heads_path(model_name: str, variant: str, exits: Sequence[int], epochs: int, seed: int) -> Path:
    """Where the heads of ``variant`` at ``exits``, fitted on ``model_name``'s train features, are cached."""
    return (
        cache_dir()
        / "multiexit"
        / f"{model_name}-heads-{variant}-exits{'_'.join(map(str, exits))}-epochs{epochs}-seed{seed}.safetensors"
    )


def prepare(
    scale: Scale | str | None = None,
    variants: Iterable[str] = FROZEN_VARIANTS,
    exit_sets: Iterable[tuple[int, ...]] = EXIT_SETS,
    head_epochs: int = 30,
    device: str | None = None,
    progress: bool = True,
) -> ExitStudy:
    """The scale's model, train/val/test features at all exits (recorded once, cached), every variant fitted on
    them (``joint`` trains its backbone: :mod:`.common` adds it).

    Features are recorded on ``device`` (default: ``bench.default_device()``); the study's models then live on
    the CPU and the timing functions move them to the device they time on.
    """
    scale = scale if isinstance(scale, Scale) else get_scale(scale)
    vit, splits = study_model(scale, progress)
    device = device or bench.default_device()
    return build_study(scale, vit, splits, variants, exit_sets, head_epochs, device, progress, cache=True)


def build_study(
    scale: Scale,
    vit: torch.nn.Module,
    splits: Splits,
    variants: Iterable[str] = FROZEN_VARIANTS,
    exit_sets: Iterable[tuple[int, ...]] = EXIT_SETS,
    head_epochs: int = 30,
    device: str = "cpu",
    progress: bool = True,
    cache: bool = False,
) -> ExitStudy:
    """Record features of ``vit`` on every split at the union of ``exit_sets``, then fit each variant's heads
    (cached under :func:`study_model_name` when ``cache``)."""
    variants = [check_choice("variant (heads on a frozen backbone)", v, FROZEN_VARIANTS) for v in variants]
    exit_sets = [tuple(e) for e in exit_sets]
    all_exits = tuple(sorted({b for e in exit_sets for b in e}))
    recorder = MultiExitViT(vit, all_exits).eval()
    files = record_files(study_model_name(scale), all_exits) if cache else {}
    features = {
        split: recorded_features(
            recorder, getattr(splits, split), scale.eval_batch_size, files.get(split), device, progress
        )
        for split in SPLITS
    }
    vit.cpu()  # recorded: from here on, models move to a device only to be timed
    costs = exit_costs(recorder, splits.input_size)
    study = ExitStudy(scale, vit, splits, features, costs)
    histories = []
    for variant in variants:
        for exits in exit_sets:
            model = MultiExitViT(vit, exits, variant).eval()
            heads_file = heads_path(study_model_name(scale), variant, exits, head_epochs, scale.train.seed)
            history = fitted_heads(
                model, features["train"], head_epochs, scale.train.seed, heads_file if cache else None
            )
            histories.append(history.assign(variant=variant, exits=exits_label(exits)))
            study.models[(variant, exits)] = model
    study.head_history = pd.concat(histories, ignore_index=True)
    study.plain_top1 = study.plain_accuracy("test")
    return study


def paired_loss_interval(
    plain_correct: torch.Tensor, exit_correct: torch.Tensor, resamples: int = 4000, seed: int = 0
) -> tuple[float, float, float]:
    """Top-1 points lost (plain minus exit, ``[N]`` bools each, the same images) and its 95% paired bootstrap
    interval over images (``bench.paired_difference_interval``)."""
    check(
        plain_correct.shape == exit_correct.shape and plain_correct.ndim == 1,
        "shapes",
        (tuple(plain_correct.shape), tuple(exit_correct.shape)),
        "two [N] tensors over the same images",
    )
    plain, exit_ = (100 * correct.double().numpy() for correct in (plain_correct, exit_correct))  # points: 0 or 100
    return bench.paired_difference_interval(plain, exit_, resamples, seed)
