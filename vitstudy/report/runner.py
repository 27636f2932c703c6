"""Regenerate the report: run the numbered notebooks headless, publish their figures and tables atomically.

Notebooks write through ``vitstudy.report.save_figure`` / ``save_table`` into ``$VITSTUDY_OUT``. The runner points
that at a staging folder per notebook and moves the files into place only when the whole notebook succeeded, so a
failed run leaves the last good figures where they were.

What a run removes: only files this runner published for the same notebook before (the manifest records each
notebook's ``files``) and that the notebook no longer writes. Anything else in the output folder, a hand-made table
or a note, is never touched, even when its name carries the notebook's number.

Where a report goes: the default scale (``quick``) writes to ``figures/``, the committed report; any other scale
writes to ``figures/<scale>/`` unless ``out`` says otherwise, so a smoke or full run never overwrites it. One
output folder holds one scale: a run into a folder whose manifest records another scale is refused (one line
naming both and the folder to use instead) rather than started afresh, because starting afresh would leave the
other scale's figures beside the new ones with nothing saying which is which.

Each executed notebook is published too, cleaned of run-to-run noise (:mod:`vitstudy.report.published`), as
``notebooks/NN_name.ipynb`` of the output folder: a reader sees every table, figure and closing sentence without
running anything. A run ends by naming the notebooks it did not run whose published copy no longer holds their
source's code (:func:`outdated_published`), so a run of a few notebooks says which others to re-run.

Staging folders live in the cache (``data/cache/report/``, ignored by git), never under ``figures/``: a report
killed with SIGKILL leaves nothing for git to pick up, and the next run removes what a dead run left.

No cell has a time limit (training runs for hours), yet a run cannot wait for ever: each notebook runs under a
watchdog (:mod:`vitstudy.report.execute`) that recovers a cell whose reply the kernel lost, or fails with one line
naming the notebook and the cell when an idle kernel answers nothing.

What a run says: one line per notebook as it ends and the result (``log``); each cell's seconds, the kernel's
progress lines and the watchdog's lines go to ``detail`` (the command line's log file, :mod:`.console`), and what runs
now to ``status`` (its live line on a terminal).
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import nbformat

from ..bench import PEAK_RECORD_ENV, SHARED_TIMINGS_ENV, default_device, environment_info, read_peak_record
from ..config import SCALES, get_scale
from ..data import check_data
from ..files import atomic_path, atomic_write_json, cache_dir, output_dir, project_root
from .cell_outputs import tables_within_target
from .console import clock, counted, notebook_line, shown
from .execute import NotebookFailed, execute_notebook
from .published import code_differences, publish_notebook
from .results import write_results

__all__ = [
    "DEFAULT_SCALE",
    "MANIFEST",
    "STUDY_SCALES",
    "NotebookFailed",
    "default_out",
    "is_published",
    "list_notebooks",
    "log_path",
    "notebook_scales",
    "open_manifest",
    "outdated_published",
    "run_report",
    "runs_at",
    "select_notebooks",
    "staging_root",
    "stale_files",
]

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[a-z0-9_]+\.py$")
MANIFEST = "manifest.json"
PEAK_RECORD = "machine_peak.json"  # in a notebook's staging folder: the peaks its kernel measured (not published)
DEFAULT_SCALE = "quick"  # the scale of the committed report in figures/


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def list_notebooks(folder: str | os.PathLike[str] | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.py``, jupytext percent format), in order."""
    folder = Path(folder) if folder is not None else notebooks_dir()
    return sorted(p for p in folder.glob("*.py") if NOTEBOOK_PATTERN.match(p.name))


# Scales of one study (a long protocol, not a report size): only notebooks that name them in a ``RUNS_AT`` line
# run there, and those notebooks run nowhere else (so `make report` never starts a 90-minute study).
STUDY_SCALES = ("scratch",)
RUNS_AT_PATTERN = re.compile(r"^RUNS_AT = \(([^)]*)\)", re.MULTILINE)


def notebook_scales(path: Path) -> tuple[str, ...] | None:
    """The scales a notebook's ``RUNS_AT = ("smoke", "scratch")`` line allows; None: every report scale."""
    found = RUNS_AT_PATTERN.search(path.read_text())
    return tuple(re.findall(r"[\"']([a-z]+)[\"']", found.group(1))) if found else None


def runs_at(path: Path, scale: str) -> bool:
    """Whether the report runs this notebook at ``scale``."""
    scales = notebook_scales(path)
    return scale not in STUDY_SCALES if scales is None else scale in scales


def select_notebooks(
    only: Sequence[str] | None, folder: str | os.PathLike[str] | None = None, scale: str | None = None
) -> list[Path]:
    """Notebooks whose number (``01``) or name (``01_max_speed_exit``) is in ``only``; all when empty. With a
    ``scale``, only those that run at it (:func:`runs_at`); naming one that does not is an error."""
    available = list_notebooks(folder)
    if not only:
        return [p for p in available if scale is None or runs_at(p, scale)]
    chosen = []
    for key in only:
        matches = [p for p in available if p.stem == key or p.stem.split("_")[0] == key.zfill(2)]
        if not matches:
            names = ", ".join(p.stem for p in available)
            raise ValueError(f"no notebook {key!r}: choose numbers or names among {names}")
        for match in matches:
            if scale is not None and not runs_at(match, scale):
                allowed = notebook_scales(match) or tuple(s for s in SCALES if s not in STUDY_SCALES)
                raise ValueError(f"notebook {match.stem} does not run at scale {scale!r}: expected one of {allowed}")
        chosen.extend(m for m in matches if m not in chosen)
    return sorted(chosen)


def default_out(scale: str) -> Path:
    """``figures/`` for the default scale, ``figures/<scale>/`` for any other (``$VITSTUDY_OUT`` moves both)."""
    return output_dir() if scale == DEFAULT_SCALE else output_dir() / scale


def staging_root() -> Path:
    """Where notebooks write while they run, and where the last executed copy of each stays: in the cache."""
    return cache_dir() / "report"


def log_path(scale: str, now: dt.datetime | None = None) -> Path:
    """Where a run at ``scale`` starting ``now`` keeps its log: in the cache, one file per run."""
    now = now or dt.datetime.now(dt.UTC)
    return staging_root() / "logs" / f"{now:%Y-%m-%dT%H%M%S}-{scale}.log"


def run_report(
    scale: str = DEFAULT_SCALE,
    only: Sequence[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    notebooks: str | os.PathLike[str] | None = None,
    log=print,
    detail=None,
    status=None,
) -> dict[str, Any]:
    """Execute the chosen notebooks in order; write their files and ``manifest.json`` into ``out``.

    ``out`` defaults to ``default_out(scale)``. Everything a user can get wrong (scale, notebook names, missing
    data, an output folder of another scale) raises before the first notebook runs. ``log`` (print-like) gets one
    line per notebook and the result; ``detail`` (print-like, default ``log``) each notebook's start, cells,
    progress and watchdog lines; ``status(where, what, since)`` what runs now, for a live line
    (:meth:`.console.ReportConsole.status`).
    """
    detail = detail or log
    run_started = time.perf_counter()
    check_data(get_scale(scale).train)
    out = Path(out) if out is not None else default_out(scale)
    chosen = select_notebooks(only, notebooks, scale)
    manifest_path = out / MANIFEST
    manifest = open_manifest(json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}, scale, out)
    root = staging_root()
    _remove_dead_staging(root)
    root.mkdir(parents=True, exist_ok=True)
    # Comparisons one notebook keeps for a later one of this run (vitstudy.bench.shared): named like a staging
    # folder, so a killed run's copy is removed by the next run, and removed when this run ends.
    shared = Path(tempfile.mkdtemp(prefix=f"staging-{os.getpid()}-shared-timings-", dir=root))
    try:
        for number, path in enumerate(chosen, start=1):
            where = f"[{number}/{len(chosen)}] {path.stem}"
            detail(f"{where} (scale {scale}) ...", flush=True)
            started = time.perf_counter()
            live = _live_line(status, where, started)
            live("starting")
            out.mkdir(parents=True, exist_ok=True)
            # The pid in the name tells a later run whether the run that made this folder is still alive.
            staging = Path(tempfile.mkdtemp(prefix=f"staging-{os.getpid()}-{path.stem}-", dir=root))
            peak_record = staging / PEAK_RECORD
            cell_seconds: list[dict[str, Any]] = []
            try:
                executed = root / f"{path.stem}.ipynb"
                # The kernel writes the machine peaks it measured while timing (vitstudy.bench.peak) for the manifest.
                environ = {PEAK_RECORD_ENV: str(peak_record), SHARED_TIMINGS_ENV: str(shared)}
                with mock.patch.dict(os.environ, environ):
                    execute_notebook(
                        path, scale, staging, executed_path=executed, log=detail, cell_seconds=cell_seconds, status=live
                    )
                live("publishing")
                peaks = read_peak_record(peak_record)
                within_target = tables_within_target(staging)
                publish_notebook(executed, staging / "notebooks" / executed.name)
                previous = manifest["notebooks"].get(path.stem, {}).get("files", [])
                files = _publish(staging, out, prefix=path.stem.split("_")[0], previous=previous)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            seconds = time.perf_counter() - started
            device = default_device()
            manifest["notebooks"][path.stem] = {
                "scale": scale,
                "seconds": round(seconds, 1),
                # Each code cell's seconds and first line: where the time went, without re-running the report.
                "cells": cell_seconds,
                # Rows meeting their target per table: which cells timed a table that meets its target.
                "within_target_rows": within_target,
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "files": files,
                # The peaks of the kernel that timed (device, threads, dtype, GFLOP/s); empty when it timed nothing.
                "environment": {**environment_info(device), "machine_peak": peaks},
            }
            atomic_write_json(manifest_path, manifest)
            log(notebook_line(where, seconds, files, out / "tables"), flush=True)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    outdated = outdated_published(out, [p for p in select_notebooks(None, notebooks, scale) if p not in chosen])
    if outdated:
        log(f"published copies older than their notebook's code (re-run them): {', '.join(outdated)}", flush=True)
    # Only the committed report (figures/, no $VITSTUDY_OUT redirect) feeds RESULTS.md; other runs leave it alone.
    committed = default_out(DEFAULT_SCALE)
    if chosen and not os.environ.get("VITSTUDY_OUT") and out.resolve() == committed.resolve():
        results = f"{shown(write_results(out))} regenerated"
    else:
        results = f"RESULTS.md left as it is (it reads {shown(committed)}/, the {DEFAULT_SCALE} report)"
    done = f"report done: {counted(len(chosen), 'notebook')}, scale {scale}, {clock(time.perf_counter() - run_started)}"
    log(f"{done}; outputs and {MANIFEST} in {shown(out)}/; {results}", flush=True)
    return manifest


def _live_line(status, where: str, started: float):
    """``status`` for one notebook, told what runs now: called with the notebook's place, that and its start."""

    def say(what: str) -> None:
        if status is not None:
            status(where, what, started)

    return say


def outdated_published(out: Path, sources: Sequence[Path]) -> list[str]:
    """The names of the notebooks ``sources`` whose published copy in ``out`` runs other code than they hold now
    (:func:`.published.code_differences`) or cannot be read; a notebook never published there is not named."""
    return [source.stem for source in sources if _copy_is_outdated(out / "notebooks" / f"{source.stem}.ipynb", source)]


def _copy_is_outdated(copy: Path, source: Path) -> bool:
    if not copy.is_file():
        return False
    try:
        return bool(code_differences(nbformat.read(copy, as_version=4), source))
    except (OSError, ValueError):  # a damaged copy (ValueError: not JSON, not a notebook): a re-run replaces it
        return True


def open_manifest(manifest: dict[str, Any], scale: str, out: Path) -> dict[str, Any]:
    """The manifest a ``scale`` run into ``out`` continues: ``manifest`` (what ``out`` holds; ``{}`` for none) with
    its scale set and a ``notebooks`` table; ValueError when it records another scale (:func:`_check_one_scale`)."""
    _check_one_scale(manifest, scale, out / MANIFEST)
    manifest["scale"] = scale
    manifest.setdefault("notebooks", {})
    return manifest


def _check_one_scale(manifest: dict[str, Any], scale: str, manifest_path: Path) -> None:
    """Refuse to add ``scale`` results to a manifest that records another scale."""
    found = {entry.get("scale") for entry in manifest.get("notebooks", {}).values()} | {manifest.get("scale")}
    others = sorted(s for s in found if s is not None and s != scale)
    if others:
        raise ValueError(
            f"{manifest_path} records a report at scale {', '.join(map(repr, others))}: a {scale!r} run there "
            f"would mix scales; use --out {default_out(scale)} (the default for {scale!r}) or another empty "
            "folder, or delete that folder's report first"
        )


def _remove_dead_staging(root: Path) -> None:
    """Delete staging folders whose report process is gone (killed runs); live runs' folders stay."""
    for folder in root.glob("staging-*"):
        pid = folder.name.split("-")[1]
        if folder.is_dir() and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _publish(staging: Path, out: Path, prefix: str, previous: Sequence[str] = ()) -> list[str]:
    """Move a successful notebook's files into ``out`` (one rename each); remove those of ``previous`` (what this
    runner published for it last time) that it no longer writes. Nothing else in ``out`` is touched."""
    produced = []
    for sub in PUBLISHED_FOLDERS:
        source, target = staging / sub, out / sub
        if not source.is_dir():
            continue
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.is_file() and is_published(sub, path.name, prefix):
                _move(path, target / path.name)
                produced.append(str(Path(sub) / path.name))
    for stale in stale_files(previous, produced):
        (out / stale).unlink(missing_ok=True)
    return sorted(produced)


PUBLISHED_FOLDERS = ("", "tables", "tables/raw", "tables/profiles", "notebooks")  # of a staging folder


def is_published(sub: str, name: str, prefix: str) -> bool:
    """Whether the staging file ``sub/name`` of notebook ``prefix`` (its number) is published: it carries the
    number, and an executed notebook is published only from ``notebooks/`` (cleaned), never a copy lying elsewhere."""
    return name.startswith(f"{prefix}_") and (Path(name).suffix != ".ipynb") == (sub != "notebooks")


def stale_files(previous: Sequence[str], produced: Sequence[str]) -> list[str]:
    """The files of ``previous`` (what the runner published for a notebook last time) that this run did not
    publish, sorted: the ones it removes. A manifest entry names a file under the output folder, never a path that
    climbs out of it (a damaged manifest): those are left alone."""
    return sorted(
        stale
        for stale in set(previous) - set(produced)
        if not Path(stale).is_absolute() and ".." not in Path(stale).parts
    )


def _move(source: Path, target: Path) -> None:
    """One rename; across file systems (``$VITSTUDY_CACHE`` on another disk) a copy, then one rename."""
    try:
        os.replace(source, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
