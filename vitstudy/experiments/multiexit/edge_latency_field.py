"""Notebook 10's table beside the field: LGViT, A-ViT and CF-ViT as published, and ours, never in the same columns.

The published numbers are a hand transcription (``data/reference/field_edge_speed.csv``: what each measures, timed or
counted, on which model and data set). Their rows fill only ``published_*`` columns, ours only ``ours_*`` columns:
a published speed-up and one of ours are measured on different models, data, devices and batch sizes, so no column
ever holds both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ...reference import REFERENCE_DIR

FIELD_FILE = "field_edge_speed.csv"
PUBLISHED, OURS = "published", "ours (this run)"
# What each block may fill; the descriptive columns (method, model, dataset, measures, note) are shared.
PUBLISHED_COLUMNS = (
    "published_speedup",
    "published_top1_change_points",
    "published_flops_reduction_pct",
    "published_hardware",
    "published_batch_size",
    "published_source",
)
OURS_COLUMNS = (
    "ours_speedup",
    "ours_speedup_low",
    "ours_speedup_high",
    "ours_ideal_speedup",
    "ours_top1_change_points",
    "ours_top1_change_low",
    "ours_top1_change_high",
    "ours_batch_size",
    "ours_device",
)
FIELD_COLUMNS = ("block", "method", "model", "dataset", "measures", *PUBLISHED_COLUMNS, *OURS_COLUMNS, "note")


def load_field() -> pd.DataFrame:
    """The published rows as transcribed (one per method)."""
    return pd.read_csv(REFERENCE_DIR / FIELD_FILE)


def published_rows(field: pd.DataFrame) -> pd.DataFrame:
    """The transcription in the published block's columns."""
    renamed = {
        "speedup": "published_speedup",
        "top1_change_points": "published_top1_change_points",
        "flops_reduction_pct": "published_flops_reduction_pct",
        "hardware": "published_hardware",
        "batch_size": "published_batch_size",
        "source": "published_source",
    }
    return field.rename(columns=renamed).assign(block=PUBLISHED)


def our_row(
    method: str,
    measures: str,
    row: Mapping[str, Any],
    top1_loss: tuple[float, float, float],
    model: str,
    dataset: str,
    note: str = "",
) -> dict[str, Any]:
    """One of our measured rows (a speed row of this notebook's tables) in the ours block; ``top1_loss`` is the
    (points lost, low, high) of the same setting, written as a change (negative: lost)."""
    loss, low, high = top1_loss
    return {
        "block": OURS,
        "method": method,
        "model": model,
        "dataset": dataset,
        "measures": measures,
        "ours_speedup": row.get("speedup", math.nan),
        "ours_speedup_low": row.get("speedup_low", math.nan),
        "ours_speedup_high": row.get("speedup_high", math.nan),
        "ours_ideal_speedup": row.get("ideal_speedup", math.nan),
        "ours_top1_change_points": -loss,
        "ours_top1_change_low": -high,
        "ours_top1_change_high": -low,
        "ours_batch_size": row.get("batch_size", row.get("timed_batch_size", math.nan)),
        "ours_device": row.get("device", ""),
        "note": note or str(row.get("note") or ""),
    }


def beside_field(field: pd.DataFrame, ours: list[dict[str, Any]]) -> pd.DataFrame:
    """The published block, then ours, in :data:`FIELD_COLUMNS`; a column of one block is empty in the other."""
    frame = pd.concat([published_rows(field), pd.DataFrame(ours)], ignore_index=True)
    for column in FIELD_COLUMNS:
        if column not in frame:
            frame[column] = math.nan
    return frame[list(FIELD_COLUMNS)]
