"""One measurement, two notebooks: a comparison kept for a later notebook of the same report run.

Notebook 03's CPU column times the same arms, on the same batch and with the same settings, as notebook 02's
Table 5.2, minutes earlier in the same report: timing them twice added nothing. 03 took 96 s of the committed
AVX-512 quick report; reading 02's times, it took 12 s of an AVX2 one. The later notebook reads the earlier
comparison's raw times, restricted to its own arms (:func:`subset`; ratios stay paired within rounds, because every
round timed all of the first comparison's arms).

The report runner names a folder for the run in ``$VITSTUDY_REPORT_TIMINGS`` and deletes it when the run ends, so
a comparison is shared only within one run on one machine. Without it (a notebook opened in JupyterLab, a
report of that notebook alone) nothing is shared and every notebook times its own arms.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..files import atomic_path, atomic_write_json, fingerprint
from .comparison import CompareSettings, Comparison
from .flops import BaselineWork

SHARED_TIMINGS_ENV = "VITSTUDY_REPORT_TIMINGS"


def shared_timings_dir() -> Path | None:
    """This report run's folder of shared comparisons; None outside a report run."""
    value = os.environ.get(SHARED_TIMINGS_ENV)
    return Path(value) if value else None


def timing_key(name: str, **identity: Any) -> str:
    """A file stem for a comparison: ``name`` plus a hash of everything that decides what was timed."""
    return f"{name}-{fingerprint(identity, length=12)}"


def share(comparison: Comparison, key: str, arm_ids: Mapping[str, str]) -> None:
    """Keep ``comparison`` for a later notebook of this report run (nothing outside a report run). ``arm_ids``: per
    arm, a fingerprint of what it ran (weights, settings, inputs), which a later notebook's arms must match."""
    folder = shared_timings_dir()
    if folder is None or comparison.raw.empty:
        return
    with atomic_path(folder / f"{key}.csv") as tmp:
        comparison.raw.to_csv(tmp, index=False)
    atomic_write_json(
        folder / f"{key}.json",
        {
            "baseline": comparison.baseline,
            "control": comparison.control,
            "settings": _plain_settings(comparison.settings),
            "environment": comparison.environment,
            "note": comparison.note,
            "work": dataclasses.asdict(comparison.work) if comparison.work is not None else None,
            "arm_ids": dict(arm_ids),
            "band_met": comparison.band_met,
            "outside_band": comparison.outside_band,
        },
    )


def _plain_settings(settings: CompareSettings) -> dict[str, Any]:
    """``settings`` as JSON values. A callable band has none and is kept as None: it only decided when the
    timing stopped, and that outcome is kept beside (``band_met``, ``outside_band``)."""
    plain = dataclasses.asdict(settings)
    if callable(plain["band"]):
        plain["band"] = None
    return plain


def shared(key: str) -> tuple[Comparison, dict[str, str]] | None:
    """The comparison an earlier notebook of this report run kept under ``key`` and its arms' fingerprints; None
    when there is none."""
    folder = shared_timings_dir()
    if folder is None or not (folder / f"{key}.json").is_file() or not (folder / f"{key}.csv").is_file():
        return None
    meta = json.loads((folder / f"{key}.json").read_text())
    work = meta["work"]
    comparison = Comparison(
        raw=pd.read_csv(folder / f"{key}.csv"),
        baseline=meta["baseline"],
        control=meta["control"],
        settings=CompareSettings(**meta["settings"]),
        environment={**meta["environment"], "shared_from": key},
        note=meta["note"],
        work=BaselineWork(**work) if work is not None else None,
        band_met=meta.get("band_met"),
        outside_band=meta.get("outside_band", {}),
    )
    return comparison, meta["arm_ids"]


def subset(comparison: Comparison, arms: Iterable[str]) -> Comparison:
    """``comparison`` restricted to ``arms`` (its baseline and control always kept); a missing arm is an error."""
    wanted = list(dict.fromkeys([comparison.baseline, *([comparison.control] if comparison.control else []), *arms]))
    timed = set(comparison.raw["arm"])
    missing = [arm for arm in wanted if arm not in timed]
    if missing:
        raise ValueError(f"arms={missing!r} are not in the shared comparison: expected some of {sorted(timed)}")
    return dataclasses.replace(
        comparison, raw=comparison.raw[comparison.raw["arm"].isin(wanted)].reset_index(drop=True)
    )


def shared_subset(key: str, arm_ids: Mapping[str, str]) -> Comparison | None:
    """The comparison shared under ``key`` restricted to the arms of ``arm_ids`` when it timed every one of them
    with the same fingerprint; else None (time them)."""
    found = shared(key)
    if found is None:
        return None
    comparison, timed = found
    if any(timed.get(arm) != arm_id for arm, arm_id in arm_ids.items()):
        return None
    return subset(comparison, arm_ids)


def arm_fingerprint(*parts: Any) -> str:
    """A short hash of tensors (their bytes, dtype and shape) and plain values: what an arm ran."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            tensor = part.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        elif isinstance(part, torch.nn.Module):
            for name, tensor in part.state_dict().items():
                digest.update(name.encode())
                digest.update(arm_fingerprint(tensor).encode())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:16]
