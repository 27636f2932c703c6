"""Notebook 04, the paper's Table 1: drop layers, drop ratios and the skip layer, every row timed and trained.

Speed: every row's training step on the paper's model (ViT-S/16, random weights and data) and on the small model
(:mod:`.skipvit_speed`, with an A/A control and profiles of the rows that stray from the FLOP-ideal), the baseline
and the headline row in bf16 too, and how close the baseline runs to the machine's peak. Accuracy:
every row trained on the scale's data (:mod:`.skipvit_runs`). Then Table 1 with the paper's numbers beside ours,
the skip-layer 10 vs 11 comparison and two figures. :data:`BUDGETS` says how much each scale trains and times.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from ... import bench
from ...bench import SMOKE_TIMING
from ...config import PAPER_SMOKE, SCALES, Scale, TrainConfig, check, paper_smoke
from ...models import SMALL_MODELS
from ...reference import load_reference
from ...skipvit import HEADLINE, TABLE1, SkipViTSettings
from ..sentences import NOT_MEASURED, machine_use, measured, number, paragraph
from .placement import TIMED_VARIANTS
from .skipvit_runs import QUICK_DATA, SMOKE_DATA, RowTraining, budget_for, runs_frame, train_row
from .skipvit_speed import CONTROL, explain_verdicts, profile_rows, rows_to_profile, timing_runs
from .table1_figures import accuracy_plot, gain_plot

__all__ = [
    "BUDGETS",
    "VIT_SMALL",
    "Table1Budget",
    "accuracy_plot",
    "accuracy_runs",
    "accuracy_summary",
    "budget",
    "explain_by_profiles",
    "findings",
    "gain_plot",
    "skip_layer_comparison",
    "small_speed",
    "table_1",
    "vit_small_rows",
    "vit_small_speed",
]

VIT_SMALL = "vit_small_patch16_224"  # the paper's model, timed on random data
SMALL_INPUT = (1, 28, 28)  # the small model's input: Fashion-MNIST size, 49 patch tokens


@dataclass(frozen=True)
class Table1Budget:
    """How much notebook 04 trains and times at one scale."""

    training: RowTraining  # every row, every seed
    timing: bench.CompareSettings  # the ViT-S/16 steps
    rows: tuple[str, ...] = tuple(TABLE1)  # the Table 1 rows trained and timed (the baseline among them)
    vit_small_img_size: int = 224  # the paper's resolution; smoke sizes shrink it (their numbers are meaningless)
    vit_small_batch: int = 16
    small_batch: int = 64
    # The small model's steps take milliseconds: a fresh process per (round, arm) adds more noise than it removes
    # (quick, one process per arm: A/A 0.83), so it may be timed differently; None: ``timing``.
    small_timing: bench.CompareSettings | None = None
    profile_limit: int = 2  # rows profiled at most: the headline row and the worst-flagged one
    profile_always: bool = False  # smoke: profile one row even when none is flagged, so that path runs
    # Rows also timed in bf16 autocast, in the same rounds as fp32 (which stays the headline): a bf16 twin per row.
    vit_small_bf16_rows: tuple[str, ...] = ("baseline", HEADLINE)
    small_bf16_rows: tuple[str, ...] = ("baseline",)  # issue 19: a 64-wide model ran 0.83x in bf16: measure it
    note: str = ""

    def __post_init__(self) -> None:
        check(
            "baseline" in self.rows and set(self.rows) <= set(TABLE1),
            "rows",
            self.rows,
            f"Table 1 rows with 'baseline' among them: {', '.join(TABLE1)}",
        )
        for name in ("vit_small_bf16_rows", "small_bf16_rows"):
            chosen = getattr(self, name)
            check(
                not chosen or ("baseline" in chosen and set(chosen) <= set(self.rows)),
                name,
                chosen,
                "() or rows of this budget with 'baseline' among them",
            )

    @property
    def settings(self) -> dict[str, SkipViTSettings]:
        return {name: TABLE1[name] for name in self.rows}

    @property
    def vit_small_input(self) -> tuple[int, int, int]:
        return (3, self.vit_small_img_size, self.vit_small_img_size)

    @property
    def small_model(self) -> str:
        """The small model timed on 28x28 input: the trained one where it is one of the study's small models; at
        ``paper`` scale (which trains ViT-S/16 at 224) the default small model."""
        return self.training.train.model if self.training.train.model in SMALL_MODELS else TrainConfig().model


_SMOKE = Table1Budget(
    RowTraining("smoke", dataclasses.replace(SMOKE_DATA, epochs=1), start="baseline"),
    SMOKE_TIMING,
    vit_small_img_size=64,
    vit_small_batch=2,
    small_batch=16,
    profile_limit=1,
    profile_always=True,  # so the profile path runs
    note="numbers meaningless",
)
# Nine rows must train in a few minutes at quick on a 2-core CPU.
BUDGETS: dict[str, Table1Budget] = {
    "smoke": _SMOKE,
    # 2,000 images x 1 epoch per row: from scratch that is ~30 updates and ~30% top-1, so rows fine-tune the quick
    # baseline (10k images x 6 epochs, trained by notebook 00) instead, at a fine-tuning learning rate.
    # Timing: a ViT-S/16 step at batch 16 takes ~1-2 s on an idle 2-core CPU, so each arm's round is
    # blocked_autorange's sizing call plus one timed block (2 steps): 11 arms x 4 rounds x 2 steps
    # ~ 90 steps ~ 3-3.5 minutes; 4 rounds is the fewest that give the bootstrap interval more than the two extreme
    # rounds. One process per (round, arm): in one process the ViT-S/16 A/A control read 0.97 and 1.22 on a quiet
    # CPU, in separate processes 0.94 and 1.02 (figures/tables/04_aa_isolation_vit_small.md,
    # vitstudy.measure.isolation); it costs ~1.4x the time (each child builds its model and warms up again).
    # The small model adds 10 arms x 8 rounds x 0.5 s ~ 45 s.
    # bf16 (issue 19), the baseline and the headline row only; estimated, not yet timed on a quiet machine: 2 more
    # ViT-S/16 arms x 4 rounds x ~4.5 s (a bf16 step ~0.9 s, issue 19's 1.70x, plus the child's start) ~ 40 s; the
    # small model's bf16 baseline 8 rounds x ~0.6 s ~ 5 s; the machine's peak <= 1.5 s per process. ~45 s in all.
    "quick": Table1Budget(
        RowTraining("quick", dataclasses.replace(QUICK_DATA, epochs=1, lr=5e-4, warmup_epochs=0.1), start="baseline"),
        # warmup_calls=0: in a fresh process blocked_autorange's untimed sizing call is already one whole step
        # (the first, which pays for the optimizer state and oneDNN's primitives); a second untimed step cost ~2 s
        # per (round, arm), ~2 minutes of the quick report. The A/A control row says whether one is enough.
        bench.CompareSettings(rounds=4, min_run_time=0.5, warmup_calls=0, isolation="process"),
        small_timing=bench.CompareSettings(rounds=8, min_run_time=0.5, warmup_calls=2),
        note="quick: every row fine-tunes notebook 00's quick baseline for 1 epoch on 2,000 images with its "
        "dropping (no warm-up: the baseline's attention is already trained); one seed, so differences "
        "under ~1 point are noise. full: every row from scratch, 3 seeds, warm-up 15% of the epochs.",
    ),
    "full": Table1Budget(
        RowTraining.of(SCALES["full"]),
        bench.CompareSettings(rounds=7, min_run_time=2.0, warmup_calls=2),
        vit_small_batch=32,
        vit_small_bf16_rows=tuple(TABLE1),
        note="whole Fashion-MNIST, 30 epochs, 3 seeds, warm-up 15% of the epochs",
    ),
    "paper": Table1Budget(
        RowTraining.of(SCALES["paper"]),
        bench.CompareSettings(rounds=11, min_run_time=5.0, warmup_calls=3),
        vit_small_batch=64,
        vit_small_bf16_rows=tuple(TABLE1),
        note="the paper's recipe (Table 2)",
    ),
    # The paper's path in a test (tests/test_paper_scale.py): smoke's timing, the paper's training, and the fewest
    # rows that run every code path (the baseline and its A/A copy, a skip 10 / 11 pair for the comparison).
    PAPER_SMOKE: dataclasses.replace(
        _SMOKE,
        training=RowTraining.of(paper_smoke(SCALES["paper"])),
        rows=("baseline", "skip_4_7_30_s10", "skip_4_7_30_s11"),
        vit_small_bf16_rows=("baseline", "skip_4_7_30_s11"),
        small_batch=4,
        note="smoke sizes: numbers meaningless",
    ),
}


def budget(scale: Scale | str | None = None) -> Table1Budget:
    """Notebook 04's budget at ``scale`` (default ``VITSTUDY_SCALE``): one of :data:`BUDGETS`."""
    return budget_for(BUDGETS, scale)


# ----------------------------------------------------------------------------------------------------------
# Speed and accuracy runs


def vit_small_rows(budget: Table1Budget) -> dict[str, SkipViTSettings]:
    """The rows timed on ViT-S/16: the budget's, plus the headline row dropping after the attention
    (:data:`.placement.TIMED_VARIANTS`) when the headline row is among them."""
    return {**budget.settings, **(TIMED_VARIANTS if HEADLINE in budget.settings else {})}


def vit_small_speed(budget: Table1Budget) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every row's training step on the paper's model: :func:`~.skipvit_speed.timing_runs` (table, raw times)."""
    return timing_runs(
        VIT_SMALL,
        budget.vit_small_input,
        1000,
        budget.vit_small_batch,
        budget.timing,
        vit_small_rows(budget),
        bf16_rows=budget.vit_small_bf16_rows,
        img_size=budget.vit_small_img_size,
    )


def small_speed(budget: Table1Budget) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every row's training step on the small model (28x28 input): (table, raw times)."""
    return timing_runs(
        budget.small_model,
        SMALL_INPUT,
        10,
        budget.small_batch,
        budget.small_timing or budget.timing,
        budget.settings,
        bf16_rows=budget.small_bf16_rows,
    )


def explain_by_profiles(budget: Table1Budget, speed: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Profile the ViT-S/16 rows outside the target (:func:`~.skipvit_speed.rows_to_profile`) and re-draw their
    verdicts from the profiles; returns (the speed table, one operator breakdown per profiled row)."""
    flagged = rows_to_profile(speed, budget.profile_limit, budget.profile_always)
    profiles = profile_rows(
        VIT_SMALL,
        budget.vit_small_input,
        1000,
        budget.vit_small_batch,
        {row: vit_small_rows(budget)[row] for row in flagged},
        img_size=budget.vit_small_img_size,
    )
    return explain_verdicts(speed, profiles), profiles


def accuracy_runs(budget: Table1Budget, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every row x seed trained (:func:`~.skipvit_runs.train_row`); returns (one results row per run, the
    concatenated per-epoch histories)."""
    return runs_frame(
        [
            train_row(budget.training, name, settings, seed, progress=progress)
            for name, settings in budget.settings.items()
            for seed in budget.training.seeds
        ]
    )


def accuracy_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread (std over seeds) of top-1 per row, and the difference of the means from the baseline."""
    grouped = runs.groupby("row", sort=False)
    summary = grouped.agg(
        setting=("setting", "first"),
        seeds=("seed", "count"),
        top1_dropping_on=("top1_dropping_on", "mean"),
        top1_dropping_on_std=("top1_dropping_on", "std"),
        top1_dropping_off=("top1_dropping_off", "mean"),
        top1_dropping_off_std=("top1_dropping_off", "std"),
        loop_im_s=("loop_im_s", "median"),
    ).reset_index()
    base = summary.loc[summary["row"] == "baseline"]
    if len(base):
        for column in ("top1_dropping_on", "top1_dropping_off"):
            summary[f"{column}_diff"] = summary[column] - float(base[column].iloc[0])
    return summary


# ----------------------------------------------------------------------------------------------------------
# Tables

SPEED_COLUMNS = [
    "images_per_s",
    "speedup",
    "speedup_low",
    "speedup_high",
    "gain_pct",
    "ideal_speedup",
    "ideal_gain_pct",
    "measured_over_ideal",
    "verdict",
    # bf16 beside fp32 (NaN where the row was not timed in bf16), then how close the baseline runs
    "bf16_speedup_over_fp32",
    "bf16_speedup_over_fp32_low",
    "bf16_speedup_over_fp32_high",
    "bf16_measured_over_ideal",
    "bf16_measured_over_ideal_low",
    "bf16_measured_over_ideal_high",
    "bf16_verdict",
    "baseline_gflop_per_s",
    "peak_gflop_per_s",
    "baseline_fraction_of_peak",
    "bf16_baseline_gflop_per_s",
    "bf16_peak_gflop_per_s",
    "bf16_baseline_fraction_of_peak",
    "flops_counted",
    "note",
]
SKIP_PAIRS = ("4_7_30", "6_8_35")  # the two-stage settings Table 1 gives at skip layer 10 and 11


def table_1(accuracy: pd.DataFrame, vit_small_speed: pd.DataFrame, small_speed: pd.DataFrame) -> pd.DataFrame:
    """Table 1 with the paper's numbers beside ours: speed-ups with 95% intervals (two models), FLOP-ideal
    speed-ups, measured ÷ ideal with its verdict, top-1; the A/A control as its last row.

    ``accuracy``: :func:`accuracy_summary`; the speeds: :func:`vit_small_speed` and :func:`small_speed` tables.
    """
    reference = load_reference("skipvit_1")
    paper = pd.DataFrame(
        {
            "row": list(TABLE1),
            "paper_im_s": reference["throughput_im_s"].to_numpy(),
            "paper_gain_pct": reference["throughput_gain_pct"].to_numpy(),
            "paper_top1": reference["top1"].to_numpy(),
            "paper_top1_diff": reference["top1_diff"].to_numpy(),
        }
    )
    table_rows = vit_small_speed["row"].isin([*TABLE1, CONTROL])  # the placement variant has its own table
    vit_small = vit_small_speed.loc[table_rows, ["row", "setting", *[c for c in SPEED_COLUMNS if c in vit_small_speed]]]
    vit_small = vit_small.rename(
        columns={c: f"vit_small_{c}" for c in vit_small.columns if c not in ("row", "setting")}
    )
    small = small_speed[["row", *[c for c in SPEED_COLUMNS if c in small_speed]]]
    small = small.rename(columns={c: f"small_{c}" for c in small.columns if c != "row"})
    acc = accuracy[
        [
            "row",
            "top1_dropping_on",
            "top1_dropping_on_std",
            "top1_dropping_on_diff",
            "top1_dropping_off",
            "top1_dropping_off_diff",
        ]
    ]
    # Left joins from our speed rows: the A/A control row has no paper or accuracy numbers (NaN), but stays.
    return (
        vit_small.merge(paper, on="row", how="left").merge(small, on="row", how="left").merge(acc, on="row", how="left")
    )


def _faster_pct(at10: pd.Series, at11: pd.Series, column: str) -> float:
    """How much faster (%) skip 11 is than skip 10 in ``column`` (images/s); NaN when either is not measured."""
    return 100 * (float(at11[column]) / float(at10[column]) - 1)


def skip_layer_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Skip 11 vs skip 10 for the two-stage settings of :func:`table_1` (those with both rows): throughput of 11
    relative to 10 (%), the paper's and ours."""
    out = []
    by_row = table.set_index("row")
    for stages in SKIP_PAIRS:
        if not {f"skip_{stages}_s10", f"skip_{stages}_s11"} <= set(by_row.index):
            continue
        at10, at11 = by_row.loc[f"skip_{stages}_s10"], by_row.loc[f"skip_{stages}_s11"]
        ideal10, ideal11 = 1 + at10["vit_small_ideal_gain_pct"] / 100, 1 + at11["vit_small_ideal_gain_pct"] / 100
        out.append(
            {
                "drop layers / ratios": at10["setting"].rsplit(" / ", 1)[0],
                "paper: 11 vs 10 (%)": _faster_pct(at10, at11, "paper_im_s"),
                "ours ViT-S/16: 11 vs 10 (%)": _faster_pct(at10, at11, "vit_small_images_per_s"),
                "ours small model: 11 vs 10 (%)": _faster_pct(at10, at11, "small_images_per_s"),
                "FLOP-ideal ViT-S/16: 11 vs 10 (%)": 100 * (ideal11 / ideal10 - 1),
                "paper top-1: 11 minus 10": at11["paper_top1"] - at10["paper_top1"],
                "ours top-1: 11 minus 10": at11["top1_dropping_on"] - at10["top1_dropping_on"],
            }
        )
    return pd.DataFrame(out)


def findings(table: pd.DataFrame, row: str = HEADLINE) -> str:
    """What notebook 04 shows, in sentences computed from :func:`table_1` (Markdown): the headline row's speed-up
    and top-1 against the paper's, its verdict against the FLOP ideal, and the A/A control."""
    rows = table.set_index("row")
    if row not in rows.index:
        return paragraph([f"How much faster is SkipViT's {row}, and at what top-1? This run did not measure it."])
    head = rows.loc[row].to_dict()
    control = rows.loc[CONTROL].to_dict() if CONTROL in rows.index else {}
    base = rows.loc["baseline"].to_dict() if "baseline" in rows.index else {}
    return paragraph(
        [
            f"How much faster does SkipViT's headline row ({head['setting']}) train, and at what top-1?",
            f"The paper reports a throughput gain of {number(head['paper_gain_pct'], digits=1, unit='%')} at "
            f"{number(head['paper_top1_diff'], unit=' points')} top-1 (ViT-S, Ascend 910A).",
            f"On ViT-S/16 we measure {measured(head, prefix='vit_small_')} against a FLOP ideal of "
            f"{number(head.get('vit_small_ideal_speedup'), unit='×')}: {head.get('vit_small_verdict', NOT_MEASURED)};",
            f"on the small model {measured(head, prefix='small_')}: {head.get('small_verdict', NOT_MEASURED)}.",
            "Our small model's top-1 with dropping on moves by "
            f"{number(head.get('top1_dropping_on_diff'), unit=' points')} from our baseline "
            "(read it with the seeds and scale printed above).",
            f"The A/A control reads {measured(control, prefix='vit_small_')}: "
            f"{control.get('vit_small_verdict', NOT_MEASURED)}.",
            f"How close to the machine: on ViT-S/16 {machine_use(head, 'vit_small_')} "
            f"(a training step counted as 3 × forward); in bf16 {machine_use(head, 'vit_small_bf16_', 'bf16')}.",
            f"In bf16 (autocast; fp32 above stays the headline) the baseline's step is "
            f"{measured(base, 'vit_small_bf16_', 'speedup_over_fp32')} faster than in fp32, and the headline row reads "
            f"{measured(head, 'vit_small_bf16_', 'measured_over_ideal')} of its FLOP ideal (fp32: "
            f"{number(head.get('vit_small_measured_over_ideal'))}): "
            f"{head.get('vit_small_bf16_verdict', NOT_MEASURED)}.",
        ]
    )
