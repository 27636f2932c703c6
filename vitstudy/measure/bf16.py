"""What bf16 autocast does to the two timed tables that once carried it: the report's Table 5.1 (forced exits,
inference) and Table 1 (SkipViT rows, training steps).

A hand-run measurement (a timing is no pass/fail on a shared CPU, and a CPU without bf16 kernels measures
nothing): on a QUIET machine with bf16 kernels (AVX-512 BF16 / AMX on a CPU, or a GPU), run

    python -m vitstudy measure bf16

It times the same experiment functions the report runs, with their bf16 option on: notebook 01's
:func:`vitstudy.experiments.multiexit.common.table_5_1` (``bf16=True``: the plain model and every forced exit get a
twin under ``torch.autocast(dtype=torch.bfloat16)``, in the same rounds) and notebook 04's
:func:`vitstudy.experiments.skipvit.common.timing_runs` (``bf16_rows``: the baseline's and the rows' training steps
in bf16 too). Each row keeps its fp32 numbers (timed in the same rounds, so its bf16 speed-up over fp32 is paired)
beside :func:`vitstudy.bench.bf16_columns`. :func:`measure` writes ``figures/tables/19_bf16.{csv,md}`` (the
machine in every row's ``device``, ``cpu_capability`` and ``bf16_native``) and the raw times.

Why outside the report: the report runs wherever someone regenerates it, and a CPU without bf16 kernels would
turn a committed bf16 reading into "not measured" (and block publishing it). fp32 stays the report's headline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from .. import bench, report
from ..bench import SMOKE_TIMING
from ..config import check, scale_budget
from ..experiments.multiexit import common as multiexit_common
from ..experiments.multiexit import max_speed_exit
from ..experiments.multiexit.study import PAPER_MODEL
from ..experiments.skipvit import common as skipvit_common
from ..experiments.skipvit import layers_ratios
from ..files import project_root
from ..models import create_model
from ..skipvit import HEADLINE, TABLE1

TABLE = "19_bf16"
FORCED_EXITS = "Table 5.1: forced exits, inference"
TRAINING_STEPS = "Table 1: SkipViT rows, training step"
_FORCED = max_speed_exit.BUDGETS["quick"]  # notebook 01's quick settings, on a CPU
_TABLE1 = layers_ratios.BUDGETS["quick"]  # notebook 04's quick settings on ViT-S/16


@dataclass(frozen=True)
class Bf16Budget:
    """What the bf16 table times at one scale: Table 5.1's model, batch, exits and timing; Table 1's model, batch,
    rows (each with its bf16 twin, the baseline among them) and timing."""

    scale: str
    forced_model: str = PAPER_MODEL
    forced_input: tuple[int, int, int] = (3, 224, 224)
    forced_batch: int = _FORCED.batch_cpu
    forced_batch_cuda: int = _FORCED.batch_cuda
    forced_exits: tuple[int, ...] = _FORCED.exits
    forced_timing: bench.CompareSettings = _FORCED.timing
    training_model: str = layers_ratios.VIT_SMALL
    training_input: tuple[int, int, int] = (3, 224, 224)
    training_classes: int = 1000
    training_batch: int = _TABLE1.vit_small_batch
    training_rows: tuple[str, ...] = ("baseline", HEADLINE)
    training_timing: bench.CompareSettings = _TABLE1.timing
    model_kwargs: tuple[tuple[str, Any], ...] = ()  # create_model's extra arguments, both models

    def __post_init__(self) -> None:
        rows = self.training_rows
        check("baseline" in rows and set(rows) <= set(TABLE1), "training_rows", rows, "Table 1 rows with 'baseline'")


BUDGETS: dict[str, Bf16Budget] = {
    # Smoke: the depth-2 tiny model at 28 px, both parts, every code path in seconds (numbers meaningless).
    "smoke": Bf16Budget(
        "smoke",
        forced_model="vitstudy_tiny_patch4_28",
        forced_input=(1, 28, 28),
        forced_batch=2,
        forced_exits=(1,),
        forced_timing=SMOKE_TIMING,
        training_model="vitstudy_tiny_patch4_28",
        training_input=(1, 28, 28),
        training_classes=10,
        training_batch=4,
        training_rows=("baseline", HEADLINE),
        training_timing=SMOKE_TIMING,
        model_kwargs=(("depth", 12), ("embed_dim", 32), ("num_heads", 2)),
    ),
    # Quick: the report's quick settings of notebooks 01 and 04 (ViT-B/16 forced out, ViT-S/16's baseline and
    # headline row), each arm once more in bf16: about twice those notebooks' timing.
    "quick": Bf16Budget("quick"),
    # Full: every Table 1 row in bf16 too.
    "full": Bf16Budget("full", training_rows=tuple(TABLE1)),
}


def budget(scale: str | None = None) -> Bf16Budget:
    """The bf16 table's budget at ``scale`` (:func:`vitstudy.config.scale_budget`)."""
    return scale_budget(BUDGETS, scale)


# The table's columns: which part and row, the fp32 numbers of the same rounds, then bf16 and the machine.
COLUMNS = (
    "table",
    "model",
    "setting",
    "speedup",
    "speedup_low",
    "speedup_high",
    "ideal_speedup",
    "measured_over_ideal",
    "verdict",
    *bench.BF16_AND_MACHINE_COLUMNS,
    "batch_size",
    "device",
    "cpu_capability",
    "bf16_native",
    "threads",
    "rounds",
    "note",
)


def forced_exit_rows(budget: Bf16Budget, device: str | torch.device) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 5.1 with bf16 twins (:func:`~vitstudy.experiments.multiexit.common.table_5_1`, ``bf16=True``):
    (its rows, its raw times)."""
    torch.manual_seed(0)
    vit = create_model(budget.forced_model, **dict(budget.model_kwargs)).eval()
    batch = budget.forced_batch_cuda if torch.device(device).type == "cuda" else budget.forced_batch
    table, comparison = multiexit_common.table_5_1(
        vit, budget.forced_input, batch, budget.forced_exits, budget.forced_timing, str(device), bf16=True
    )
    table = table.assign(table=FORCED_EXITS, model=budget.forced_model)
    return table, bench.raw_times(comparison, table=FORCED_EXITS, model=budget.forced_model)


def training_step_rows(budget: Bf16Budget, device: str | torch.device) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1's rows with bf16 twins (:func:`~vitstudy.experiments.skipvit.common.timing_runs`, ``bf16_rows``):
    (its rows, its raw times)."""
    table, raw = skipvit_common.timing_runs(
        budget.training_model,
        budget.training_input,
        budget.training_classes,
        budget.training_batch,
        budget.training_timing,
        {name: TABLE1[name] for name in budget.training_rows},
        str(device),
        bf16_rows=budget.training_rows,
        **dict(budget.model_kwargs),
    )
    return table.assign(table=TRAINING_STEPS), raw.assign(table=TRAINING_STEPS)


def bf16_table(budget: Bf16Budget, device: str | torch.device) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both parts as one table in :data:`COLUMNS` (the machine named on every row), and their raw times."""
    environment = bench.environment_info(device)
    parts = [forced_exit_rows(budget, device), training_step_rows(budget, device)]
    table = pd.concat([t for t, _ in parts], ignore_index=True).assign(
        cpu_capability=environment["cpu_capability"], bf16_native=environment["bf16_native"]
    )
    return table[list(COLUMNS)], pd.concat([r for _, r in parts], ignore_index=True)


def measure(scale: str = "quick", out: str | None = None) -> pd.DataFrame:
    """Make the bf16 table at ``scale`` and write ``19_bf16`` (table and raw times) to ``out`` (figures/)."""
    table, raw = bf16_table(budget(scale), bench.default_device())
    folder = out or project_root() / "figures"
    report.save_table(table, TABLE, out=folder, floatfmt=".3f")
    report.save_raw(raw, TABLE, out=folder)
    return table
