"""Notebook 08's statistics: per data set, every row paired with its baseline by seed, one verdict per claim.

:func:`paired_difference` is the mean of (row − reference) over the seeds both have, with its 95 % paired t
interval (``scipy.stats.ttest_rel``); :func:`scratch_summary` gives it per row against the baseline, dropping on and
off at test time; :func:`claim_verdicts` states, per paper claim and two of ours, reproduced / contradicted / cannot
tell, with the smallest difference the protocol resolves (the interval's half-width). The runs come from
:mod:`.from_scratch`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from ...plots import new_figure
from ...skipvit import HEADLINE

FIRST_STUDY_DATASET = "fashion_mnist"  # per-run tables published before the cluttered set have no dataset column


def with_dataset(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``dataset`` column (the first study's tables, Fashion-MNIST only, had none)."""
    return runs if "dataset" in runs else runs.assign(dataset=FIRST_STUDY_DATASET)


def paired_difference(values: pd.Series, reference: pd.Series) -> dict[str, float]:
    """Mean of (values − reference) over the seeds (index) both have, with its 95 % paired t interval
    (``scipy.stats.ttest_rel``) and half-width; fewer than 2 pairs: no interval."""
    pairs = pd.concat([values, reference], axis=1).dropna()
    n = len(pairs)
    mean = float((pairs.iloc[:, 0] - pairs.iloc[:, 1]).mean()) if n else math.nan
    if n < 2:
        return {"diff": mean, "diff_low": math.nan, "diff_high": math.nan, "resolvable": math.nan, "pairs": n}
    low, high = stats.ttest_rel(pairs.iloc[:, 0], pairs.iloc[:, 1]).confidence_interval()
    return {
        "diff": mean,
        "diff_low": float(low),
        "diff_high": float(high),
        "resolvable": float(high) - mean,
        "pairs": n,
    }


def scratch_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per data set and row: seeds, mean ± std of top-1 with dropping on and off at test time, and the paired
    difference to that data set's baseline (dropping on; and off) with its 95 % interval."""
    out = []
    for dataset, part in with_dataset(runs).groupby("dataset", sort=False):
        by_seed = {
            column: part.pivot(index="seed", columns="row", values=column)
            for column in ("top1_dropping_on", "top1_dropping_off")
        }
        baseline = by_seed["top1_dropping_on"].get("baseline", pd.Series(dtype=float))
        for name, mine in part.groupby("row", sort=False):
            record: dict[str, Any] = {
                "dataset": dataset,
                "row": name,
                "setting": mine["label"].iloc[0],
                "seeds": len(mine),
            }
            for column in ("top1_dropping_on", "top1_dropping_off"):
                record[column] = mine[column].mean()
                record[f"{column}_std"] = mine[column].std()
            for column, tag in (("top1_dropping_on", "on"), ("top1_dropping_off", "off")):
                paired = paired_difference(by_seed[column][name], baseline)
                record.update({f"{k}_{tag}" if k != "pairs" else k: v for k, v in paired.items()})
            record["train_minutes"] = mine["train_minutes"].mean()
            record["loop_im_s"] = mine["loop_im_s"].median()
            out.append(record)
    return pd.DataFrame(out)


NOT_RECORDED = "not recorded (trained before runs named their machine)"


def training_time(runs: pd.DataFrame) -> pd.DataFrame:
    """Per data set and machine a run was trained on (``trained_on``; older runs did not record it): runs, their
    summed and median training minutes. Minutes are wall time of each run's worker, so they include any pause."""
    frame = with_dataset(runs)
    machine = frame["trained_on"] if "trained_on" in frame else pd.Series(index=frame.index, dtype=object)
    frame = frame.assign(trained_on=machine.fillna(NOT_RECORDED))
    table = frame.groupby(["dataset", "trained_on"], sort=False)["train_minutes"].agg(
        runs="count", train_minutes="sum", median_minutes_per_run="median"
    )
    return table.reset_index().assign(train_hours=lambda t: t["train_minutes"] / 60)


# Each claim: (what, row, compared with, the paper's difference in points, the direction the paper claims).
CLAIMS = (
    ("6 / 55% / skip 11 keeps the baseline's top-1", HEADLINE, "baseline", -0.01, "none"),
    ("fused token 6 / 45% loses top-1 against the baseline", "fused_6_45", "baseline", -1.78, "worse"),
    ("skip 6 / 55% beats the fused token 6 / 45%", HEADLINE, "fused_6_45", 1.77, "better"),
    ("warm-up (15% of epochs) helps 4,7 / 30% / skip 10", "skip_4_7_30_s10_warmup", "skip_4_7_30_s10", 2.55, "better"),
    ("ours: the skip beats plain dropping at 6 / 55%", HEADLINE, "drop_6_55", math.nan, "better"),
    (
        "ours: [CLS]-ranked skip beats timm's random PatchDropout at equal FLOPs",
        HEADLINE,
        "patch_dropout",
        math.nan,
        "better",
    ),
)
NO_LOSS_MARGIN = 1.0  # points: "keeps top-1" is reproduced when a loss larger than this is excluded
# A t interval from 2 pairs is valid but its spread is one number: two runs that happen to agree give a narrow
# interval by chance (an interim look at the cluttered study read "reproduced" from 2 seeds). So a verdict needs 3.
MIN_PAIRS_FOR_VERDICT = 3


def verdict(low: float, high: float, direction: str, paper: float = math.nan, pairs: int | None = None) -> str:
    """reproduced / contradicted / cannot tell, from a 95 % interval of (row − reference) in points over ``pairs``
    paired seeds (None: as many as the interval needs).

    A claimed direction is judged first. Where the interval spans zero, the paper's own difference ``paper`` can
    still be told: lying outside the interval, the paper's size is contradicted (at this scale) even though the
    sign is not resolved."""
    if math.isnan(low):
        return "cannot tell (fewer than 2 seeds)"
    if pairs is not None and pairs < MIN_PAIRS_FOR_VERDICT:
        return f"cannot tell (only {pairs} seeds; a verdict needs {MIN_PAIRS_FOR_VERDICT})"
    if direction == "none":
        if high < 0:
            return "contradicted (a loss)"
        return "reproduced" if low > -NO_LOSS_MARGIN else f"cannot tell (a loss up to {-low:.2f} not excluded)"
    sign = 1 if direction == "better" else -1
    if sign * low > 0 and sign * high > 0:
        return "reproduced"
    if sign * low < 0 and sign * high < 0:
        return "contradicted (the opposite)"
    if not math.isnan(paper) and not low <= paper <= high:
        return f"contradicted in size (the paper's {paper:+.2f} lies outside the interval; the sign is not resolved)"
    return "cannot tell at this scale"


RESOLVABLE_TARGET = 1.0  # points: the protocol should tell a difference of one point from zero on every claim


def claim_verdicts(runs: pd.DataFrame) -> pd.DataFrame:
    """One line per data set and claim (the paper's and two of ours) whose two rows both trained: our paired
    difference with its 95 % interval, the smallest difference this protocol resolves (the interval's
    half-width), and the verdict. Top-1 with dropping on."""
    out = []
    for dataset, part in with_dataset(runs).groupby("dataset", sort=False):
        by_seed = part.pivot(index="seed", columns="row", values="top1_dropping_on")
        for claim, row, reference, paper, direction in CLAIMS:
            if not {row, reference} <= set(by_seed.columns):
                continue
            paired = paired_difference(by_seed[row], by_seed[reference])
            told = verdict(paired["diff_low"], paired["diff_high"], direction, paper, paired["pairs"])
            out.append(
                {
                    "dataset": dataset,
                    "claim": claim,
                    "row": row,
                    "compared_with": reference,
                    "paper_diff": paper,
                    **paired,
                    "verdict": told,
                    "seeds_to_resolve": seeds_to_resolve(paired, direction) if told.startswith("cannot") else math.nan,
                }
            )
    return pd.DataFrame(out)


def seeds_to_resolve(paired: dict[str, float], direction: str, most: int = 100) -> float:
    """How many seeds would turn "cannot tell" into a verdict if the spread of the paired differences and their
    mean stayed as measured: the smallest n with t(n−1)·s/√n below |mean| (below 1 point + mean for "keeps
    top-1"). NaN with fewer than 2 pairs or a mean of zero; ``most``+ is reported as ``most``."""
    n, half = paired["pairs"], paired["resolvable"]
    if n < 2 or math.isnan(half):
        return math.nan
    spread = half * math.sqrt(n) / stats.t.ppf(0.975, n - 1)
    goal = NO_LOSS_MARGIN + paired["diff"] if direction == "none" else abs(paired["diff"])
    if goal <= 0:
        return math.nan
    for seeds in range(2, most + 1):
        if stats.t.ppf(0.975, seeds - 1) * spread / math.sqrt(seeds) < goal:
            return float(seeds)
    return float(most)


def scratch_plot(runs: pd.DataFrame, summary: pd.DataFrame, dataset: str = FIRST_STUDY_DATASET) -> Figure:
    """One data set. Left: test top-1 (dropping on) of every seed and the row mean. Right: paired difference to
    the baseline with its 95 % interval, dropping on (filled) and off (open) at test time."""
    runs = with_dataset(runs)
    runs, summary = runs[runs["dataset"] == dataset], summary[summary["dataset"] == dataset]
    fig = new_figure((11, 4.2))
    left, right = fig.subplots(1, 2)
    y = np.arange(len(summary))
    for i, name in enumerate(summary["row"]):
        seeds = runs[runs["row"] == name]["top1_dropping_on"].to_numpy(dtype=float)
        left.scatter(seeds, np.full(len(seeds), i), color="tab:gray", s=14, zorder=2)
    left.errorbar(
        summary["top1_dropping_on"],
        y,
        xerr=summary["top1_dropping_on_std"].fillna(0),
        fmt="D",
        color="tab:blue",
        capsize=3,
        label="mean ± std over seeds",
    )
    left.set_yticks(y, summary["setting"], fontsize=7)
    left.invert_yaxis()
    left.set(xlabel="test top-1 (%), dropping on", title="every seed (grey) and the mean")
    left.grid(axis="x", alpha=0.3)
    left.legend(fontsize=7)
    for tag, offset, face in (("on", -0.12, "tab:orange"), ("off", 0.12, "none")):
        diff = summary[f"diff_{tag}"].to_numpy(dtype=float)
        low = diff - summary[f"diff_low_{tag}"].to_numpy(dtype=float)
        high = summary[f"diff_high_{tag}"].to_numpy(dtype=float) - diff
        right.errorbar(
            diff,
            y + offset,
            xerr=[np.nan_to_num(low), np.nan_to_num(high)],
            fmt="o",
            capsize=3,
            color="tab:orange",
            mfc=face,
            label=f"dropping {tag} at test",
        )
    right.axvline(0, color="black", lw=0.8)
    right.set_yticks(y, [""] * len(y))
    right.invert_yaxis()
    right.set(xlabel="minus baseline (points), paired by seed, 95% interval", title="difference to the baseline")
    right.grid(axis="x", alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle(DATASET_TITLES.get(dataset, dataset), fontsize=10)
    return fig


DATASET_TITLES = {
    "fashion_mnist": "Fashion-MNIST (items on black)",
    "fashion_mnist_cluttered": "cluttered Fashion-MNIST (items among fragments of other items)",
}
