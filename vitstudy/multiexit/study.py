"""The offline study of a multi-exit ViT: record once, then evaluate any setting without running the backbone.

The data set goes through the backbone once (``heads.recorded_features``): features at every exit and after the
last block. Every variant's logits are then one linear layer away, and any threshold, policy or batch size is
evaluated offline by ``exits.simulate`` (top-1, exit histogram, FLOP-ideal speed-up). :class:`ExitStudy` holds
the backbone, the recorded features and the fitted heads; which model and data a study is of, and where its
recordings are cached, is the experiments' business (``vitstudy.experiments.multiexit.study`` builds one).
A variant with a backbone of its own (``joint``: trained with its exits) joins through :meth:`ExitStudy.add_variant`
with the features recorded through that backbone.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from .. import bench
from ..config import Scale, check, check_choice
from ..data import Splits
from .costs import ExitCosts
from .exits import Simulation, simulate
from .heads import ExitFeatures, logits_from_features
from .model import DEFAULT_EXITS, VARIANTS, MultiExitViT

EXIT_SETS: tuple[tuple[int, ...], ...] = ((3,), (6,), (9,), DEFAULT_EXITS)  # every setting a study fits by default


def exits_label(exits: Sequence[int]) -> str:
    """``(3, 6, 9) -> "3,6,9"``: how an exit set is written in tables and selectors."""
    return ",".join(str(b) for b in exits)


def parse_exits(label: str) -> tuple[int, ...]:
    """``"3,6,9" -> (3, 6, 9)``: the inverse of :func:`exits_label`."""
    return tuple(int(b) for b in label.split(","))


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
        self,
        variant: str,
        exits: Sequence[int],
        threshold: float,
        policy: str,
        split: str = "test",
        resamples: int = 4000,
        seed: int = 0,
    ) -> tuple[float, float, float]:
        """Top-1 points a setting loses against the plain model on ``split``, with its 95% paired bootstrap interval
        over images (``bench.paired_difference_interval``: resampling an image pairs the two models on it)."""
        plain, exit_ = self.plain_correct(split), self.correct(variant, exits, threshold, policy, split)
        points = [100 * correct.double().numpy() for correct in (plain, exit_)]  # [N] each: 0 or 100
        return bench.paired_difference_interval(*points, resamples, seed)

    def plain_accuracy(self, split: str = "test") -> float:
        """Top-1 (%) of the unmodified model: its own head on the recorded final features."""
        return 100 * self.plain_correct(split).double().mean().item()
