"""The paper's SkipViT tables with ours beside them: Table 1 (layers, ratios, skip layer), Table 3 (warm-up),
and the skip-layer 10 vs 11 comparison. Inputs are the frames of :mod:`vitstudy.skipvit.study`'s training runs and
:mod:`vitstudy.skipvit.timing`'s timed steps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..reference import load_reference
from .settings import TABLE1

SPEED_COLUMNS = ["train_im_s", "speedup", "speedup_low", "speedup_high", "gain_pct", "ideal_speedup",
                 "ideal_gain_pct", "measured_over_ideal", "verdict", "note"]  # fmt: skip


def table_1(accuracy: pd.DataFrame, paper_speed: pd.DataFrame, small_speed: pd.DataFrame) -> pd.DataFrame:
    """Table 1 with the paper's numbers beside ours: speed-ups with 95% intervals (two models), FLOP-ideal
    speed-ups, measured ÷ ideal with its verdict, top-1; the A/A control as its last row.

    ``accuracy``: :func:`~vitstudy.skipvit.study.accuracy_summary`; the speeds: two
    :func:`~vitstudy.skipvit.timing.timing_runs` tables (the paper's model and the small one).
    """
    reference = load_reference("skipvit_1")
    paper = pd.DataFrame({
        "row": list(TABLE1),
        "paper_im_s": reference["throughput_im_s"].to_numpy(),
        "paper_gain_pct": reference["throughput_gain_pct"].to_numpy(),
        "paper_top1": reference["top1"].to_numpy(),
        "paper_top1_diff": reference["top1_diff"].to_numpy(),
    })  # fmt: skip
    vits = paper_speed[["row", "setting", *[c for c in SPEED_COLUMNS if c in paper_speed]]]
    vits = vits.rename(columns={c: f"vits_{c}" for c in vits.columns if c not in ("row", "setting")})
    small = small_speed[["row", *[c for c in SPEED_COLUMNS if c in small_speed]]]
    small = small.rename(columns={c: f"small_{c}" for c in small.columns if c != "row"})
    acc = accuracy[["row", "top1_dropping_on", "top1_dropping_on_std", "top1_dropping_on_diff", "top1_dropping_off",
                    "top1_dropping_off_diff"]]  # fmt: skip
    # Left joins from our speed rows: the A/A control row has no paper or accuracy numbers (NaN), but stays.
    return vits.merge(paper, on="row", how="left").merge(small, on="row", how="left").merge(acc, on="row", how="left")


def _faster_pct(at10: pd.Series, at11: pd.Series, column: str) -> float:
    """How much faster (%) skip 11 is than skip 10 in ``column`` (images/s); NaN when either is not measured."""
    return 100 * (float(at11[column]) / float(at10[column]) - 1)


def skip_layer_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Skip 11 vs skip 10 for both two-stage settings of :func:`table_1`: throughput of 11 relative to 10 (%),
    the paper's and ours."""
    out = []
    for stages in ("4_7_30", "6_8_35"):
        at10 = table.loc[table["row"] == f"skip_{stages}_s10"].iloc[0]
        at11 = table.loc[table["row"] == f"skip_{stages}_s11"].iloc[0]
        ideal10, ideal11 = 1 + at10["vits_ideal_gain_pct"] / 100, 1 + at11["vits_ideal_gain_pct"] / 100
        out.append({
            "drop layers / ratios": at10["setting"].rsplit(" / ", 1)[0],
            "paper: 11 vs 10 (%)": _faster_pct(at10, at11, "paper_im_s"),
            "ours ViT-S/16: 11 vs 10 (%)": _faster_pct(at10, at11, "vits_train_im_s"),
            "ours small model: 11 vs 10 (%)": _faster_pct(at10, at11, "small_train_im_s"),
            "FLOP-ideal ViT-S/16: 11 vs 10 (%)": 100 * (ideal11 / ideal10 - 1),
            "paper top-1: 11 minus 10": at11["paper_top1"] - at10["paper_top1"],
            "ours top-1: 11 minus 10": at11["top1_dropping_on"] - at10["top1_dropping_on"],
        })  # fmt: skip
    return pd.DataFrame(out)


def table_3(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3 (warm-up or not) beside the paper's two rows; ``runs``: :func:`~vitstudy.skipvit.study.warmup_runs`."""
    reference = load_reference("skipvit_3")
    grouped = runs.groupby("warmup_epochs").agg(
        epochs=("epochs", "first"), seeds=("seed", "count"),
        top1_dropping_on=("top1_dropping_on", "mean"), top1_dropping_on_std=("top1_dropping_on", "std"),
        top1_dropping_off=("top1_dropping_off", "mean"),
    ).reset_index()  # fmt: skip
    grouped["warmup"] = np.where(grouped["warmup_epochs"] > 0, "yes", "no")
    grouped["paper_warmup_epochs"] = [0 if w == "no" else 15 for w in grouped["warmup"]]
    grouped["paper_epochs"] = 100
    grouped["paper_top1"] = [
        float(reference.loc[reference["warmup_epochs"] == p, "top1"].iloc[0]) for p in grouped["paper_warmup_epochs"]
    ]
    columns = ["warmup", "warmup_epochs", "epochs", "seeds", "top1_dropping_on", "top1_dropping_on_std",
               "top1_dropping_off", "paper_warmup_epochs", "paper_epochs", "paper_top1"]  # fmt: skip
    return grouped[columns]
