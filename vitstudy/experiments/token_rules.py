"""Notebook 11: which token rule keeps the most top-1 at the same measured speed, off the shelf.

Five rules remove tokens from the same trained baseline, none of them trained with its tokens gone:

- ``skip``: SkipViT's rule at the paper's headline layers (drop after block 6 by [CLS] attention, the dropped
  tokens back as block 11's input);
- ``fused``: EViT's rule at the same drop layer (dropped after block 6's attention, replaced by one fused token);
- ``drop``: plain dropping after block 6, nothing put back, nothing fused;
- ``tome``: ToMe, similar tokens merged inside every block (r per block);
- ``patch_dropout``: random patches removed before the first block (timm's ``PatchDropout``, kept active at
  inference with a fixed seed).

Each rule is set to a few FLOP-ideal speed-ups (its *levels*), each level's parameter solved from the token counts
every block sees (:func:`vitstudy.tome.costs.token_flops`, ToMe's own :func:`~vitstudy.tome.costs.schedule_flops`),
then every arm of one data set is evaluated on the scale's whole test set and timed in one comparison with the
baseline's A/A copy (:func:`vitstudy.bench.compare_models`). Two data sets: notebook 00's Fashion-MNIST baseline
and a cluttered Fashion-MNIST baseline trained once into the cache with the same recipe.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from timm.layers import PatchDropout
from timm.layers.patch_dropout import patch_dropout_forward
from torch import nn
from torch.utils.data import Subset

from .. import bench, train
from ..cluttered import on_cluttered
from ..config import SCALES, Scale, TrainConfig, check, get_scale, scale_budget
from ..data import make_loader
from ..files import cache_dir
from ..plots import new_figure
from ..skipvit import HEADLINE, TABLE1, SkipViTSettings, apply_skipvit
from ..steps import evaluate
from ..tome import apply_tome, schedule_flops
from ..tome.costs import token_flops
from .sentences import is_missing, number, paragraph, points

# The rules, in the order the table and the figure list them, and how the closing names them.
RULES: dict[str, str] = {
    "skip": "SkipViT's skip",
    "fused": "EViT's fused token",
    "drop": "plain dropping",
    "tome": "ToMe",
    "patch_dropout": "PatchDropout",
}
# The paper's headline row gives the layers every dropping rule uses: drop after block 6, back at block 11.
DROP_LAYER = TABLE1[HEADLINE].drop_layers[0]
SKIP_LAYER = TABLE1[HEADLINE].skip_layer
DATASETS: dict[str, str] = {"fashion_mnist": "Fashion-MNIST", "fashion_mnist_cluttered": "cluttered Fashion-MNIST"}
# Levels: LEVEL_COUNT FLOP-ideal speed-ups evenly spaced from the lowest to the highest, or to the most a rule can
# reach at its layers when that is less (SkipViT's four skipped blocks cannot make a depth-12 model 2x faster).
LOWEST_LEVEL, HIGHEST_LEVEL, LEVEL_COUNT = 1.1, 2.0, 5
LEVEL_TOLERANCE = 0.02  # a level's parameter must give a FLOP ideal within 2 % of the level
PATCH_DROPOUT_SEED = 0
BASELINE = "baseline"  # the timed baseline arm; its A/A copy is bench.control_arm(BASELINE)


@dataclass(frozen=True)
class TokenRulesBudget:
    """How notebook 11 evaluates and times at one scale, and the cluttered baseline it trains once."""

    scale: str
    timing: bench.CompareSettings  # every arm of one data set, with the A/A control, in one comparison
    timing_batch: int  # the test images one timed forward sees
    cluttered: TrainConfig  # the cluttered baseline's recipe (trained once into the cache)
    note: str = ""
    # The test images every arm is evaluated on: None, the scale's whole test set; smoke evaluates fewer.
    evaluated_images: int | None = None
    levels: int = LEVEL_COUNT  # levels per rule; smoke runs two, so that its arms take seconds


BUDGETS: dict[str, TokenRulesBudget] = {
    "smoke": TokenRulesBudget(
        "smoke",
        bench.SMOKE_ONE_CALL_TIMING,
        timing_batch=8,
        cluttered=on_cluttered(
            dataclasses.replace(
                SCALES["smoke"].train, train_size=128, val_size=64, test_size=128, epochs=1, batch_size=32
            )
        ),
        note="smoke: tiny data sets, numbers meaningless",
        evaluated_images=64,
        levels=2,
    ),
    # 27 arms per data set (5 rules x 5 levels, the baseline, its A/A copy). The quick report gives this notebook
    # about three minutes on a 2-core CPU: every arm is evaluated on the first 2,000 test images (a top-1 difference
    # between two arms then has a paired interval of roughly ±1 point) and timed on a batch of 128, four rounds at
    # most; the cluttered baseline trains once on 5,000 canvases for 4 epochs. `full` evaluates the whole test set.
    "quick": TokenRulesBudget(
        "quick",
        bench.CompareSettings(rounds=4, min_run_time=0.2, warmup_calls=1),
        timing_batch=128,
        cluttered=on_cluttered(dataclasses.replace(SCALES["quick"].train, train_size=5_000, epochs=4)),
        note="quick: top-1 on the first 2,000 test images; the cluttered baseline is trained once with the quick "
        "recipe on 5,000 canvases x 4 epochs (the patch-8 model), far from converged; one seed",
        evaluated_images=2_000,
    ),
    "full": TokenRulesBudget(
        "full",
        bench.CompareSettings(rounds=8, min_run_time=0.5, warmup_calls=2),
        timing_batch=256,
        cluttered=on_cluttered(SCALES["full"].train),
        note="full: both baselines on the whole training split, 30 epochs; one seed",
    ),
}


def budget(scale: Scale | str | None = None) -> TokenRulesBudget:
    """Notebook 11's budget at ``scale`` (default ``VITSTUDY_SCALE``): one of :data:`BUDGETS`."""
    return scale_budget(BUDGETS, scale)


# ----------------------------------------------------------------------------------------------------------
# The rules and their levels


class SeededPatchDropout(PatchDropout):
    """timm's ``PatchDropout`` kept active at inference, drawing the same patches for the same batch every call.

    timm's layer removes patches only in training (a regulariser); here removing them is the speed-up, so it acts
    in eval too. In training it is timm's layer: a fresh random draw of the same number of patches every step. Each
    eval forward draws from its own generator seeded with ``seed``, so an evaluation is repeatable and the caller's
    random stream is left as it was.
    """

    def __init__(self, prob: float, num_prefix_tokens: int = 1, seed: int = PATCH_DROPOUT_SEED) -> None:
        super().__init__(prob, num_prefix_tokens=num_prefix_tokens)
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prob == 0:
            return x
        if self.training:  # fine-tuning with the rule (notebook 11's trained curve): a fresh draw every step
            return super().forward(x)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            output, _ = patch_dropout_forward(x, self.prob, self.num_prefix_tokens, self.ordered, True)
        return output


@dataclass(frozen=True)
class Level:
    """One rule at one FLOP-ideal speed-up: the level asked for, the parameter that gives it and its FLOP ideal.

    ``parameter``: the patch tokens removed (``skip``, ``fused``, ``drop``: at the drop layer; ``patch_dropout``:
    before block 1), or ToMe's r of each block (a list).
    """

    rule: str
    target: float
    parameter: int | tuple[int, ...]
    label: str
    ideal: float

    @property
    def arm(self) -> str:
        """The arm's name in the comparison: ``"tome 1.55×"``."""
        return f"{self.rule} {self.target:.2f}×"


def _patches(model: nn.Module) -> tuple[int, int]:
    return model.patch_embed.num_patches, model.num_prefix_tokens


def drop_settings(model: nn.Module, rule: str, dropped: int) -> SkipViTSettings:
    """The SkipViT settings of ``rule`` (skip, fused or drop) removing ``dropped`` patch tokens at the drop layer:
    the smallest ratio in thousandths whose floor(ratio x patches) is ``dropped``."""
    patches, _ = _patches(model)
    ratio = math.ceil(1000 * dropped / patches) / 1000
    if rule == "skip":
        return SkipViTSettings((DROP_LAYER,), (ratio,), skip_layer=SKIP_LAYER)
    return SkipViTSettings((DROP_LAYER,), (ratio,), mode=rule)


def dropped_flops(model: nn.Module, rule: str, dropped: int) -> float:
    """Forward FLOPs per image of ``rule`` removing ``dropped`` patch tokens, from the tokens each block sees."""
    patches, prefix = _patches(model)
    full, depth = patches + prefix, len(model.blocks)
    if rule == "patch_dropout":
        return token_flops(model, [full - dropped] * depth, [full - dropped] * depth)
    fused = 1 if rule == "fused" and dropped else 0
    attention, mlp = [], []
    for layer in range(1, depth + 1):
        after = full - dropped + fused
        if rule == "skip":
            seen = after if DROP_LAYER < layer < SKIP_LAYER else full
            attention.append(seen)
            mlp.append(seen)
        elif rule == "drop":
            attention.append(after if layer > DROP_LAYER else full)
            mlp.append(after if layer > DROP_LAYER else full)
        else:  # fused: dropped after block 6's attention, so its MLP sees the fewer tokens too
            attention.append(after if layer > DROP_LAYER else full)
            mlp.append(after if layer >= DROP_LAYER else full)
    return token_flops(model, attention, mlp)


def tome_schedules(depth: int, most: int) -> list[tuple[int, ...]]:
    """ToMe's r per block, in steps of one merge: r + 1 in the first m blocks and r after, m = 0 … depth - 1, for
    r = 0 … ``most`` (the constant schedules ToMe uses, and every one between two of them)."""
    return [tuple([r + 1] * m + [r] * (depth - m)) for r in range(most + 1) for m in range(depth)]


def tome_label(schedule: Sequence[int]) -> str:
    """``"r = 3 per block"`` or ``"r = 4 in blocks 1-5, 3 after"``."""
    low, high = min(schedule), max(schedule)
    if low == high:
        return f"r = {low} per block"
    return f"r = {high} in blocks 1–{list(schedule).count(high)}, {low} after"


def candidates(model: nn.Module, rule: str) -> list[tuple[int | tuple[int, ...], str, float]]:
    """Every parameter of ``rule`` on ``model`` with its label and FLOP-ideal speed-up, from removing nothing on."""
    check(rule in RULES, "rule", rule, f"one of {tuple(RULES)}")
    base = token_flops(model, *[[sum(_patches(model))] * len(model.blocks)] * 2)
    patches, _ = _patches(model)
    if rule == "tome":
        schedules = tome_schedules(len(model.blocks), patches // 2)
        return [(s, tome_label(s), base / schedule_flops(model, list(s))) for s in schedules]
    found = []
    for dropped in range(patches):  # at least one patch always stays
        if rule == "patch_dropout":
            label = f"{dropped} of {patches} patches removed before block 1 (random, seed {PATCH_DROPOUT_SEED})"
        else:
            label = drop_settings(model, rule, dropped).label
        found.append((dropped, label, base / dropped_flops(model, rule, dropped)))
    return found


def level_targets(reach: float, count: int = LEVEL_COUNT) -> tuple[float, ...]:
    """``count`` levels evenly spaced from :data:`LOWEST_LEVEL` to :data:`HIGHEST_LEVEL` or to ``reach`` (the
    most a rule's FLOP ideal can be), whichever is lower, to two decimals."""
    check(isinstance(count, int) and count >= 2, "count", count, "an integer >= 2 (the lowest and highest level)")
    top = min(HIGHEST_LEVEL, math.floor(100 * reach) / 100)
    if top <= LOWEST_LEVEL:
        raise ValueError(
            f"a rule reaching a FLOP ideal of {reach:.2f}x is not allowed: expected one that reaches more than "
            f"{LOWEST_LEVEL}x"
        )
    return tuple(round(float(t), 2) for t in np.linspace(LOWEST_LEVEL, top, count))


def solve_levels(
    model: nn.Module, rule: str, targets: Sequence[float] | None = None, count: int = LEVEL_COUNT
) -> list[Level]:
    """``rule``'s parameter at each target FLOP-ideal speed-up (default: :func:`level_targets` of its reach, ``count``
    of them): the one whose FLOP ideal is nearest, within :data:`LEVEL_TOLERANCE`."""
    found = candidates(model, rule)
    ideals = np.array([ideal for _, _, ideal in found])
    levels = []
    for target in targets if targets is not None else level_targets(float(ideals.max()), count):
        best = int(np.argmin(np.abs(ideals / target - 1)))
        parameter, label, ideal = found[best]
        if abs(ideal / target - 1) > LEVEL_TOLERANCE:
            raise ValueError(
                f"level {target}x is not allowed for rule {rule!r}: its nearest FLOP ideal is {ideal:.3f}x, expected "
                f"one within {LEVEL_TOLERANCE:.0%} (levels up to {ideals.max():.2f}x)"
            )
        levels.append(Level(rule, float(target), parameter, label, float(ideal)))
    return levels


def all_levels(model: nn.Module, count: int = LEVEL_COUNT) -> list[Level]:
    """Every rule's ``count`` levels on ``model``, rules in :data:`RULES` order."""
    return [level for rule in RULES for level in solve_levels(model, rule, count=count)]


def build_arm(model: nn.Module, rule: str, parameter: int | Sequence[int]) -> nn.Module:
    """A copy of ``model`` running ``rule`` with ``parameter`` (see :class:`Level`); ``model`` is untouched."""
    check(rule in RULES, "rule", rule, f"one of {tuple(RULES)}")
    arm = copy.deepcopy(model)
    if rule == "tome":
        return apply_tome(arm, list(parameter))
    if rule == "patch_dropout":
        patches, prefix = _patches(model)
        # timm keeps int(patches x (1 - prob)) patches: half a patch of margin keeps that count exact.
        prob = 0.0 if parameter == 0 else 1 - (patches - parameter + 0.5) / patches
        arm.patch_drop = SeededPatchDropout(prob, num_prefix_tokens=prefix).train(arm.training)  # the model's mode
        return arm
    return apply_skipvit(arm, drop_settings(model, rule, parameter))


# ----------------------------------------------------------------------------------------------------------
# The baselines, the evaluation and the timing


def cluttered_run_dir(scale: str, cfg: TrainConfig, seed: int = 0):
    """Where the cluttered baseline of a scale is cached, named like notebook 00's baselines (its own folder, so the
    baselines folder holds only notebook 00's)."""
    return cache_dir() / "token_rules" / f"{scale}-{cfg.model}-{train.config_fingerprint(cfg)}-seed{seed}"


def trained_baseline(dataset: str, chosen: TokenRulesBudget, progress: bool = False) -> train.TrainResult:
    """The trained baseline of ``dataset``: notebook 00's for Fashion-MNIST, the cluttered one trained once with
    ``chosen.cluttered`` (then loaded from the cache)."""
    check(dataset in DATASETS, "dataset", dataset, f"one of {tuple(DATASETS)}")
    if dataset == "fashion_mnist":
        return train.baseline(chosen.scale, progress=progress)
    return train.train(chosen.cluttered, cluttered_run_dir(chosen.scale, chosen.cluttered), progress=progress)


def test_images(result: train.TrainResult, count: int) -> torch.Tensor:
    """The first ``count`` test images [count, C, H, W]: the batch every arm is timed on."""
    return torch.stack([result.splits.test[i][0] for i in range(min(count, len(result.splits.test)))])


def rules_table(
    dataset: str, chosen: TokenRulesBudget, device: str | torch.device | None = None, progress: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every rule at every level on ``dataset``'s baseline: top-1 on the whole test set and the measured inference
    speed-up in one comparison with the A/A control. Returns (table, raw times)."""
    device = torch.device(device or bench.default_device())
    result = trained_baseline(dataset, chosen, progress)
    model = result.model.cpu().eval()
    levels = all_levels(model, chosen.levels)
    arms = {BASELINE: model, **{level.arm: build_arm(model, level.rule, level.parameter) for level in levels}}
    test = result.splits.test
    if chosen.evaluated_images is not None:
        test = Subset(test, range(min(chosen.evaluated_images, len(test))))
    loader = make_loader(test, get_scale(chosen.scale).eval_batch_size, train=False, num_workers=0)
    top1 = {name: evaluate(arm, loader, device)["top1"] for name, arm in arms.items()}
    for arm in arms.values():
        arm.cpu()
    batch = test_images(result, chosen.timing_batch)
    comparison = bench.compare_models(arms, batch, chosen.timing, device, baseline=BASELINE)
    images = len(batch)
    base = top1[BASELINE]
    rows = [
        {
            "rule": BASELINE,
            "level": 1.0,
            "parameter": "no token removed",
            "top1": base,
            "top1_change": 0.0,
            **bench.speed_row(comparison, BASELINE, images, 1.0, (1.0, 1.0)),
        }
    ]
    for level in levels:
        rows.append(
            {
                "rule": level.rule,
                "level": level.target,
                "parameter": level.label,
                "top1": top1[level.arm],
                "top1_change": top1[level.arm] - base,
                **bench.speed_row(comparison, level.arm, images, level.ideal, bench.FLOP_IDEAL_TARGET),
            }
        )
    rows.append(
        {
            "rule": comparison.control,
            "level": 1.0,
            "parameter": "an identical copy of the baseline",
            "top1": math.nan,
            "top1_change": math.nan,
            **bench.control_row(comparison, images),
        }
    )
    table = pd.DataFrame(rows).assign(
        dataset=dataset,
        test_images=len(test),
        batch_size=images,
        **bench.protocol(comparison),
        note=bench.table_note(comparison),
    )
    return table, bench.raw_times(comparison, dataset=dataset)


# What the notebook shows of a table (the saved table keeps every column).
COLUMNS = [
    "rule",
    "level",
    "parameter",
    "ideal_speedup",
    "top1",
    "top1_change",
    "speedup",
    "speedup_low",
    "speedup_high",
    "measured_over_ideal",
    "verdict",
]


def curves_plot(table: pd.DataFrame) -> Figure:
    """Top-1 against measured speed-up, one curve per rule from the baseline on, the 95% interval of each speed-up
    as a horizontal bar, the FLOP-ideal position of each level as a faint cross at the same top-1."""
    fig = new_figure((7.5, 4.8))
    ax = fig.add_subplot()
    base = table[table["rule"] == BASELINE].iloc[0]
    for number_, (rule, name) in enumerate(RULES.items()):
        rows = table[table["rule"] == rule].sort_values("ideal_speedup")
        if rows.empty:
            continue
        color = f"C{number_}"
        speed, top1 = [1.0, *rows["speedup"]], [base["top1"], *rows["top1"]]
        ax.plot(speed, top1, "-", color=color, alpha=0.8)
        below = (rows["speedup"] - rows["speedup_low"]).clip(lower=0)
        above = (rows["speedup_high"] - rows["speedup"]).clip(lower=0)
        ax.errorbar(rows["speedup"], rows["top1"], xerr=[below, above], fmt="o", color=color, capsize=2, label=name)
        ax.scatter(rows["ideal_speedup"], rows["top1"], marker="x", color=color, alpha=0.3)
    ax.scatter([1.0], [base["top1"]], marker="*", s=120, color="black", zorder=3, label="baseline")
    ax.set_xlabel("inference speed-up over the baseline, measured (×; faint crosses: FLOP ideal)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{DATASETS.get(str(base['dataset']), base['dataset'])}: every rule off the shelf")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


# ----------------------------------------------------------------------------------------------------------
# The closing


def top1_at(table: pd.DataFrame, rule: str, speed: float, column: str = "speedup") -> float:
    """``rule``'s top-1 at speed-up ``speed`` (``column``: measured ``speedup`` or ``ideal_speedup``), read off its
    curve from the baseline (1.00×) through its levels by linear interpolation; NaN outside the curve."""
    base = table.loc[table["rule"] == BASELINE, "top1"].iloc[0]
    rows = table[(table["rule"] == rule) & table[column].notna()]
    points_ = sorted([(1.0, base), *zip(rows[column], rows["top1"])])
    xs, ys = [x for x, _ in points_], [y for _, y in points_]
    if not xs[0] <= speed <= xs[-1]:
        return math.nan
    return float(np.interp(speed, xs, ys))


def ranking(table: pd.DataFrame, column: str = "speedup") -> tuple[float, list[tuple[str, float]], list[str]]:
    """The rules at the fastest speed-up (``column``) every rule reaches, best top-1 first: (that speed-up, [(rule,
    top-1 change against the baseline)], rules never faster than the baseline, left out)."""
    base = table.loc[table["rule"] == BASELINE, "top1"].iloc[0]
    reach = {rule: table.loc[table["rule"] == rule, column].max() for rule in RULES}
    reach = {rule: value for rule, value in reach.items() if not is_missing(value)}
    slower = [rule for rule, value in reach.items() if value <= 1.0]
    faster = {rule: value for rule, value in reach.items() if value > 1.0}
    if not faster:
        return math.nan, [], slower
    speed = min(faster.values())
    changes = [(rule, top1_at(table, rule, speed, column) - base) for rule in faster]
    return speed, sorted(changes, key=lambda item: -item[1]), slower


def _dataset_sentence(dataset: str, table: pd.DataFrame) -> str:
    name = DATASETS.get(dataset, dataset)
    base = table.loc[table["rule"] == BASELINE, "top1"].iloc[0]
    trust = bench.table_trust(table)
    if trust:
        column, how, intro = "ideal_speedup", "FLOP ideal", f"On {name} the measured speed-ups are {trust}, so "
    else:
        column, how, intro = "speedup", "measured", f"On {name} "
    speed, changes, slower = ranking(table, column)
    if not changes:
        return f"{intro}no rule is faster than the baseline."
    (best, gain), rest = changes[0], changes[1:]
    others = "; ".join(f"{RULES[rule]} {points(change)}" for rule, change in rest)
    text = (
        f"{intro}at {speed:.2f}× {how} (the fastest every rule reaches) {RULES[best]} keeps the most top-1: it "
        f"{points(gain)} against the baseline's {number(base, unit=' %')}" + (f"; {others}" if others else "") + "."
    )
    if slower:
        text += f" {', '.join(RULES[rule] for rule in slower)} never ran faster than the baseline."
    return text


def findings(tables: Mapping[str, pd.DataFrame]) -> str:
    """What notebook 11 shows, in sentences computed from its tables (one per data set, keyed by data set)."""
    sentences = [
        "Which token rule keeps the most top-1 at the same measured speed when the trained baseline is used as it is "
        "(off the shelf: no rule was trained with its tokens removed)?"
    ]
    sentences += [_dataset_sentence(dataset, table) for dataset, table in tables.items()]
    # How much of its FLOP saving each rule turns into speed, from the tables whose A/A control passed only.
    trusted = [t[t["rule"].isin(list(RULES))] for t in tables.values() if not bench.table_trust(t)]
    ratios = pd.concat(trusted) if trusted else pd.DataFrame(columns=["rule", "measured_over_ideal"])
    by_rule = ratios.groupby("rule")["measured_over_ideal"].median().dropna()
    if len(by_rule) > 1:
        worst, best = by_rule.idxmin(), by_rule.idxmax()
        sentences.append(
            f"Measured ÷ FLOP ideal (the median over its levels) is lowest for {RULES[worst]} "
            f"({by_rule[worst]:.2f}) and highest for {RULES[best]} ({by_rule[best]:.2f}), so the clock and the "
            "FLOP count need not rank the rules alike."
        )
    sizes = [int(t["test_images"].iloc[0]) for t in tables.values() if len(t)]
    if sizes:
        base = float(next(iter(tables.values())).loc[lambda t: t["rule"] == BASELINE, "top1"].iloc[0])
        half = 196 * math.sqrt(max(base, 1e-9) / 100 * (1 - base / 100) / min(sizes))
        sentences.append(
            f"One seed and one training per data set; a top-1 on {min(sizes):,} test images has a 95 % half-width "
            f"of about {half:.1f} points, so rules closer than that are not told apart, and PatchDropout's patches "
            f"are one fixed random draw (seed {PATCH_DROPOUT_SEED})."
        )
    return paragraph(sentences)


def shown(table: pd.DataFrame, columns: Sequence[str] = COLUMNS) -> pd.DataFrame:
    """The columns the notebook shows of a table."""
    return table[list(columns)]
