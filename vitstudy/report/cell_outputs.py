"""What each report cell left behind, for the manifest: so where a report's time went can be read from the manifest
alone (:mod:`vitstudy.measure.report_time`), without re-running it and without guessing from a cell's first line.

Per cell: the output files it wrote (paths under the notebook's staging folder; a cell that times leaves its raw
times under ``tables/raw/<table>.csv``) and how many files it wrote into the cache (trained runs, exit heads, recorded
features). Per notebook: how many rows of each table it wrote meet their target (a ``verdict`` that starts with
"within target"), counted once the notebook has finished (a table is often saved cells after it was timed).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pandas as pd

from ..verdicts import WITHIN_TARGET

# The cache's folders that the report's own processes write whatever a cell does: pid files and executed copies.
CACHE_BOOKKEEPING = ("processes", "report")


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Every file under ``folder`` (relative path -> modification time in ns), leaving out top-level ``skip``."""
    files = {}
    for path in folder.rglob("*") if folder.is_dir() else ():
        relative = path.relative_to(folder)
        if relative.parts[0] in skip:
            continue
        with contextlib.suppress(OSError):  # a file removed while we look (an atomic write's temporary)
            if path.is_file():
                files[relative.as_posix()] = path.stat().st_mtime_ns
    return files


def changed(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """The files of ``after`` that are new or were rewritten since ``before``, sorted."""
    return sorted(name for name, mtime in after.items() if before.get(name) != mtime)


def tables_within_target(folder: Path) -> dict[str, int]:
    """``{table: rows within target}`` of every table under ``folder/tables`` with at least one such row."""
    counts = {path.stem: rows_within_target(path) for path in sorted((folder / "tables").glob("*.csv"))}
    return {name: count for name, count in counts.items() if count > 0}


def rows_within_target(path: Path) -> int:
    """Rows of a table whose ``verdict`` says it meets its target; 0 for a table without verdicts."""
    with contextlib.suppress(OSError, ValueError, pd.errors.ParserError):
        verdicts = pd.read_csv(path).get("verdict")
        if verdicts is not None:
            return int(verdicts.astype(str).str.startswith(WITHIN_TARGET).sum())
    return 0


class CellOutputs:
    """Snapshots the staging folder and the cache at a cell's start; :meth:`since_start` says what the cell wrote."""

    def __init__(self, staging: Path, cache: Path) -> None:
        self.staging, self.cache = staging, cache
        self.start()

    def start(self) -> None:
        self.outputs = snapshot(self.staging)
        self.cached = snapshot(self.cache, CACHE_BOOKKEEPING)

    def since_start(self) -> dict[str, Any]:
        """``wrote`` (output files, sorted) and ``cache_files`` (how many files it wrote into the cache)."""
        # papermill keeps the executed copy up to date as cells finish; when it lies in staging it is not an output
        wrote = [name for name in changed(self.outputs, snapshot(self.staging)) if not name.endswith(".ipynb")]
        return {"wrote": wrote, "cache_files": len(changed(self.cached, snapshot(self.cache, CACHE_BOOKKEEPING)))}
