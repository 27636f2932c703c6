"""Notebook 01: the maximum speed of an early exit (the report's Table 5.1).

Every image is forced out after one exit of the report's ViT-B/16 and timed on random input against the plain
model (:func:`.common.table_5_1`, shared with notebook 10); each measured speed-up stands beside its FLOP-ideal value
(FLOPs of the plain model over those of the exit path) and the report's own numbers, and how close the plain model
runs to the peak. The same in bf16 is a hand-run measurement (:mod:`vitstudy.measure.bf16`), not part of the report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import torch
from matplotlib.figure import Figure

from ... import bench
from ...bench import SMOKE_TIMING
from ...config import PAPER_SMOKE, Scale, check, scale_budget
from ...multiexit import DEFAULT_EXITS, check_exits
from ...plots import grouped_bars, new_figure
from ..sentences import judged, number, paragraph, share_of_peak
from .common import SMOKE_ONE_CALL_TIMING


@dataclass(frozen=True)
class MaxSpeedBudget:
    """How notebook 01 times the forced exits at one scale."""

    scale: str
    timing: bench.CompareSettings
    batch_cpu: int = 8  # ViT-B/16 on a CPU: a few images per second, and batch 4 times noisily
    batch_cuda: int = 64
    exits: tuple[int, ...] = DEFAULT_EXITS  # the forced exits timed (fp32; bf16 is `python -m vitstudy measure bf16`)
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("batch_cpu", "batch_cuda"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
        check_exits(self.exits, 12)  # the report's ViT-B/16 has 12 blocks

    def batch(self, device: str | torch.device) -> int:
        """The timed batch on ``device``."""
        return self.batch_cuda if torch.device(device).type == "cuda" else self.batch_cpu


_QUICK = MaxSpeedBudget(
    "quick",
    # A 1.5 s block holds about one forward of ViT-B/16 at batch 8 on a 2-core CPU.
    timing=bench.CompareSettings(rounds=6, min_run_time=1.5, warmup_calls=1),
    note="fp32 within minutes on a 2-core CPU",
)


_LONGER = bench.CompareSettings(rounds=10, min_run_time=2.0)  # full / paper: tighter intervals


BUDGETS: dict[str, MaxSpeedBudget] = {
    # One image and one forced exit: the other exits run the same lines at another block.
    "smoke": MaxSpeedBudget(
        "smoke", SMOKE_ONE_CALL_TIMING, batch_cpu=1, exits=(3,), note="CI: seconds, numbers meaningless"
    ),
    "quick": _QUICK,
    "full": dataclasses.replace(_QUICK, scale="full", timing=_LONGER, note="longer timing"),
    "paper": dataclasses.replace(_QUICK, scale="paper", timing=_LONGER, note="longer timing, as the report's"),
    # The paper path at smoke sizes (Scale.smoke_sizes): one forced exit runs every line of Table 5.1.
    PAPER_SMOKE: MaxSpeedBudget(PAPER_SMOKE, SMOKE_TIMING, batch_cpu=2, exits=(3,), note="a test on a CPU"),
}


def budget(scale: Scale | str | None = None) -> MaxSpeedBudget:
    """Notebook 01's budget at a scale (:func:`vitstudy.config.scale_budget`)."""
    return scale_budget(BUDGETS, scale)


# Table 5.1 as saved by notebook 01: ours, the report's numbers beside them, then how it was measured.
TABLE_5_1_COLUMNS = (
    "setting",
    "exit_block",
    "images_per_s",
    "speedup",
    "speedup_low",
    "speedup_high",
    "ideal_speedup",
    "measured_over_ideal",
    "measured_over_ideal_low",
    "measured_over_ideal_high",
    "verdict",
    "paper_inference_speed_im_s",
    "paper_speed_improvement",
    "baseline_gflop_per_s",
    "peak_gflop_per_s",
    "baseline_fraction_of_peak",
    "flops_counted",
    "gflops_per_image",
    "batch_size",
    "device",
    "threads",
    "rounds",
    "note",
)


def beside_paper_5_1(table: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """:func:`.common.table_5_1` with the report's images/s and speed-up beside each exit block, in the column order
    notebook 01 saves (:data:`TABLE_5_1_COLUMNS`); ``paper`` is ``reference.load_reference("multiexit_5.1")``."""
    wide = paper.pivot_table(index="exit_block", columns="metric", values="value").add_prefix("paper_")
    wide.index = wide.index.astype("Int64")
    return table.merge(wide, left_on="exit_block", right_index=True, how="left")[list(TABLE_5_1_COLUMNS)]


def speed_bars(table: pd.DataFrame, reference: pd.DataFrame | None = None) -> Figure:
    """Table 5.1 as bars: measured and FLOP-ideal speed-up per exit block, the report's measured beside them."""
    fig = new_figure((7, 3.4))
    ax = fig.subplots()
    table = table[table["exit_block"].notna()].sort_values("exit_block")  # the A/A control row has no block
    series = [("ours, measured", table["speedup"]), ("ours, FLOP-ideal", table["ideal_speedup"])]
    if reference is not None:
        ref = reference[reference["metric"] == "speed_improvement"].set_index("exit_block")["value"].astype(float)
        series.append(("report, measured (RTX A6000)", table["exit_block"].map(ref)))
    last = table["exit_block"].max()
    groups = [f"exit {b}" if b < last else "original" for b in table["exit_block"]]
    grouped_bars(ax, groups, series, value_format="%.2f")
    ax.set(ylabel="speed-up over the original model (x)", title="every image forced out at one block")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def findings(table: pd.DataFrame) -> str:
    """What notebook 01 shows, in a few sentences computed from :func:`beside_paper_5_1`'s table (Markdown): the
    earliest exit (the best case) against the report's and the FLOP ideal, judged only under a passing A/A
    control (:func:`vitstudy.bench.table_trust`), and how close the plain model runs to the machine."""
    exits = table[table["setting"].str.startswith("forced exit")].sort_values("exit_block")
    if exits.empty:
        return paragraph(["How fast can an early exit be at best? This run timed no forced exit."])
    best = exits.iloc[0].to_dict()
    original = table[table["setting"].str.startswith("original")]
    plain = original.iloc[0].to_dict() if len(original) else {}
    trust = bench.table_trust(table)
    speed = bench.speed_phrase(best["speedup"], best["speedup_low"], best["speedup_high"], best["ideal_speedup"])
    return paragraph(
        [
            "How fast can an early exit be at best?",
            f"Forced out after block {best['exit_block']}, the exit path speeds inference up {speed}; the report "
            f"measured {number(best.get('paper_speed_improvement'), unit='×')} on an RTX A6000.",
            f"Against its FLOP ideal that is {judged(best['verdict'], trust)}.",
            "So the best case is the blocks skipped, no more: what an exit buys on real data depends on how many "
            "images leave early (notebook 02).",
            f"The plain model runs at {share_of_peak(plain)}; bf16 is a separate hand-run table "
            "(`python -m vitstudy measure bf16`, 19_bf16).",
        ]
    )
