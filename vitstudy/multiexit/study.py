"""The offline study of a multi-exit ViT: record once, then evaluate any setting without running the backbone.

The data set goes through the backbone once (``heads.recorded_features``): features at every exit and after the
last block. Every variant's logits are then one linear layer away, and any threshold, policy or batch size is
evaluated offline by ``exits.simulate`` (top-1, exit histogram, FLOP-ideal speed-up). :class:`ExitStudy` holds
the backbone, the recorded features and the fitted heads; :func:`prepare` builds it for a scale (the cached
baseline, or at ``paper`` scale the report's pretrained ViT-B/16 on ImageNet), :func:`build_study` for any model.
A variant with a backbone of its own (``joint``: trained with its exits) joins through :meth:`ExitStudy.add_variant`
with the features recorded through that backbone.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .. import bench
from ..config import Scale, TrainConfig, check, check_choice, get_scale
from ..data import Splits, build_splits
from ..files import cache_dir
from ..models import create_model
from ..train import baseline, baseline_run_dir
from .costs import ExitCosts, exit_costs
from .exits import Simulation, simulate
from .heads import ExitFeatures, fitted_heads, logits_from_features, recorded_features
from .model import DEFAULT_EXITS, FROZEN_VARIANTS, VARIANTS, MultiExitViT

PAPER_MODEL = "vit_base_patch16_224"  # the report's model, with timm's ImageNet-1k weights
# The report's sizes: heads fitted on 50k ImageNet training images, 10k held out, 10k of val/ as the test set.
PAPER_SIZES = dict(train_size=50_000, val_size=10_000, test_size=10_000)
# At smoke sizes (config.paper_smoke) the scale's handful of training and test images, and two to choose on.
PAPER_SMOKE_SIZES = dict(val_size=2)
EXIT_SETS: tuple[tuple[int, ...], ...] = ((3,), (6,), (9,), DEFAULT_EXITS)  # every setting a study fits by default


def exits_label(exits: Sequence[int]) -> str:
    """``(3, 6, 9) -> "3,6,9"``: how an exit set is written in tables and selectors."""
    return ",".join(str(b) for b in exits)


def parse_exits(label: str) -> tuple[int, ...]:
    """``"3,6,9" -> (3, 6, 9)``: the inverse of :func:`exits_label`."""
    return tuple(int(b) for b in label.split(","))


def paired_loss_interval(
    plain_correct: torch.Tensor, exit_correct: torch.Tensor, resamples: int = 4000, seed: int = 0
) -> tuple[float, float, float]:
    """Top-1 points lost (plain minus exit, ``[N]`` bools each, the same images) and a 95% percentile bootstrap
    interval (``scipy.stats.bootstrap``) over images: resampling an image's difference pairs the two models on it."""
    check(
        plain_correct.shape == exit_correct.shape and plain_correct.ndim == 1,
        "shapes",
        (tuple(plain_correct.shape), tuple(exit_correct.shape)),
        "two [N] tensors over the same images",
    )
    diff = 100 * (plain_correct.double() - exit_correct.double()).numpy()  # [N] in points: -100, 0 or +100
    if len(diff) < 2:  # no image, or one: every resample is that image
        loss = float(diff.mean()) if len(diff) else math.nan
        return loss, loss, loss
    result = stats.bootstrap((diff,), np.mean, n_resamples=resamples, method="percentile", random_state=seed)
    interval = result.confidence_interval
    return float(diff.mean()), float(interval.low), float(interval.high)


def summarize(sim: Simulation, targets: torch.Tensor, exits: Sequence[int], costs: ExitCosts) -> dict[str, float]:
    """Top-1 (%), share of images that left early (%), share per exit (%), FLOP-ideal speed-up."""
    row = {
        "top1": 100 * (sim.predictions == targets).double().mean().item(),
        "exited_pct": 100 * (sim.exit_block < costs.depth).double().mean().item(),
        "ideal_speedup": costs.ideal_speedup(exits, sim.exit_block),
    }
    for block in [*exits, costs.depth]:
        row[f"at_{block}_pct"] = 100 * (sim.exit_block == block).double().mean().item()
    return row


@dataclass
class ExitStudy:
    """A trained ViT, its splits, recorded features per split, FLOP costs and a fitted model per setting."""

    scale: Scale
    vit: torch.nn.Module
    splits: Splits
    features: dict[str, ExitFeatures]
    costs: ExitCosts
    models: dict[tuple[str, tuple[int, ...]], MultiExitViT] = field(default_factory=dict)
    head_history: pd.DataFrame = field(default_factory=pd.DataFrame)
    plain_top1: float = math.nan
    # features recorded through a variant's own backbone (joint); every other variant reads ``features``
    variant_features: dict[str, dict[str, ExitFeatures]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._logits: dict[tuple[str, tuple[int, ...], str], torch.Tensor] = {}

    @property
    def depth(self) -> int:
        return self.costs.depth

    @property
    def all_exits(self) -> tuple[int, ...]:
        return self.features["test"].exits

    @property
    def variants(self) -> tuple[str, ...]:
        """The variants this study holds a fitted setting of, in the order they were added."""
        return tuple(dict.fromkeys(variant for variant, _ in self.models))

    def features_of(self, variant: str) -> dict[str, ExitFeatures]:
        """The recorded features (per split) a variant's heads read: its own backbone's, else the shared ones."""
        return self.variant_features.get(variant, self.features)

    def add_variant(
        self,
        variant: str,
        models: dict[tuple[int, ...], MultiExitViT],
        features: dict[str, ExitFeatures],
        history: pd.DataFrame | None = None,
    ) -> None:
        """Add a variant that runs a backbone of its own: a model per exit set, the features recorded through that
        backbone on every split (the same images in the same order) and its training history, if any."""
        check_choice("variant", variant, VARIANTS)
        for split, recorded in self.features.items():
            own = features.get(split)
            same = own is not None and torch.equal(own.targets, recorded.targets)
            check(same, "features of split", split, "a recording of the study's images of every split, in order")
        for exits, model in models.items():
            check(model.depth == self.depth, "model.depth", model.depth, f"the study's depth {self.depth}")
            self.models[(variant, tuple(exits))] = model
        self.variant_features[variant] = features
        self._logits = {key: value for key, value in self._logits.items() if key[0] != variant}
        if history is not None:
            self.head_history = pd.concat([self.head_history, history.assign(variant=variant)], ignore_index=True)

    def model(self, variant: str, exits: Sequence[int]) -> MultiExitViT:
        key = (check_choice("variant", variant, VARIANTS), tuple(exits))
        check(key in self.models, "(variant, exits)", key, f"a fitted setting, one of {list(self.models)}")
        return self.models[key]

    def configured(self, variant: str, exits: Sequence[int], threshold: float, policy: str) -> MultiExitViT:
        """A fitted setting with its knobs set, for timing: a shallow copy, so it shares the backbone and heads."""
        model = copy.copy(self.model(variant, exits))
        model.threshold, model.policy = threshold, policy
        return model

    def logits(self, variant: str, exits: Sequence[int], split: str = "test") -> torch.Tensor:
        """``[N, exits + 1, C]`` logits of one setting on a recorded split (cached)."""
        key = (variant, tuple(exits), split)
        if key not in self._logits:
            self._logits[key] = logits_from_features(self.model(variant, exits), self.features_of(variant)[split])
        return self._logits[key]

    def evaluate(
        self,
        variant: str,
        exits: Sequence[int],
        threshold: float,
        policy: str,
        batch_size: int | None = None,
        split: str = "test",
        confidence_kind: str = "softmax",
        simulation: Simulation | None = None,
    ) -> dict[str, Any]:
        """One results row of a setting, offline: top-1, points lost vs the plain model, exit shares, ideal speed-up.

        ``simulation``: this setting's ``simulate`` result when the caller already has it (the explorer draws from
        it too), so it runs once."""
        logits = self.logits(variant, exits, split)
        sim = simulation
        if sim is None:
            sim = simulate(logits, exits, self.depth, threshold, policy, confidence_kind, batch_size)
        targets = self.features[split].targets
        variant_final = 100 * (logits[:, -1].argmax(-1) == targets).double().mean().item()
        plain = self.plain_accuracy(split)
        row = {
            "variant": variant,
            "exits": exits_label(exits),
            "policy": policy,
            "threshold": threshold,
            "batch_size": batch_size if policy == "batch" else None,
            **summarize(sim, targets, exits, self.costs),
            "variant_final_top1": variant_final,
            "plain_top1": plain,
        }
        row["top1_loss"] = plain - row["top1"]  # top-1 points lost against the plain model
        return row

    def correct(
        self, variant: str, exits: Sequence[int], threshold: float, policy: str, split: str = "test"
    ) -> torch.Tensor:
        """``[N]`` bool: which images of ``split`` a setting classifies correctly (offline)."""
        sim = simulate(self.logits(variant, exits, split), exits, self.depth, threshold, policy)
        return sim.predictions == self.features[split].targets

    def plain_correct(self, split: str = "test") -> torch.Tensor:
        """``[N]`` bool: which images of ``split`` the unmodified model classifies correctly."""
        with torch.inference_mode():
            logits = self.vit.head(self.features[split].features[:, -1])
        return logits.argmax(-1) == self.features[split].targets

    def top1_loss_interval(
        self, variant: str, exits: Sequence[int], threshold: float, policy: str, split: str = "test"
    ) -> tuple[float, float, float]:
        """Top-1 points a setting loses against the plain model on ``split``, with its 95% paired interval."""
        return paired_loss_interval(self.plain_correct(split), self.correct(variant, exits, threshold, policy, split))

    def plain_accuracy(self, split: str = "test") -> float:
        """Top-1 (%) of the unmodified model: its own head on the recorded final features."""
        return 100 * self.plain_correct(split).double().mean().item()


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
    them (``joint`` trains its backbone: an experiment adds it, ``vitstudy.experiments.multiexit.joint_exit``).

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
    """Record features of ``vit`` on every split at the union of ``exit_sets``, then fit each variant's heads."""
    variants = [check_choice("variant (heads on a frozen backbone)", v, FROZEN_VARIANTS) for v in variants]
    exit_sets = [tuple(e) for e in exit_sets]
    all_exits = tuple(sorted({b for e in exit_sets for b in e}))
    recorder = MultiExitViT(vit, all_exits).eval()
    features = {
        split: recorded_features(
            recorder,
            getattr(splits, split),
            scale.eval_batch_size,
            record_path(study_model_name(scale), split, all_exits) if cache else None,
            device,
            progress,
        )
        for split in ("train", "val", "test")
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
