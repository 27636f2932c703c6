"""What ``python -m vitstudy report`` prints: one line per notebook as it ends, then the result, and nothing a
newcomer would read as a fault. Each cell's seconds, the notebooks' progress lines and the watchdog's lines go to the
run's log file, which the last line names (``--verbose`` prints them too); on a terminal one live line, rewritten in
place, says which cell runs and for how long.

The log is appended line by line rather than written atomically: it is a record of a run in progress, read with
``tail -f`` while it grows and after a failure, never an output another step reads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from ..verdicts import NOT_TRUSTWORTHY, control_rows, table_trust


class ReportConsole:
    """The report's console and its log file (opened on the first line, so a run refused before its first
    notebook leaves no empty log). ``live`` (default: ``stream`` is a terminal and not ``verbose``) shows
    :meth:`status` in place with a carriage return, its clock redrawn every ``tick_seconds`` (None: only when
    :meth:`tick` is called) so that a cell running for minutes without a progress line still shows time passing."""

    def __init__(
        self,
        log_path: Path,
        stream: TextIO | None = None,
        verbose: bool = False,
        live: bool | None = None,
        tick_seconds: float | None = 1.0,
    ) -> None:
        self.log_path, self.stream, self.verbose = log_path, stream or sys.stdout, verbose
        self.live = (not verbose and self.stream.isatty()) if live is None else live
        self.tick_seconds, self.now = tick_seconds, time.perf_counter
        self.file: TextIO | None = None
        self.shown = 0  # characters of the live line now on screen
        self.current: tuple[str, str, float] | None = None  # the live line's (where, what, since)
        self.lock = threading.RLock()  # the ticker redraws from its own thread
        self.stopped = threading.Event()
        self.ticker: threading.Thread | None = None

    def say(self, line: str, **print_options: Any) -> None:
        """A line for the console (and the log)."""
        with self.lock:
            self._print(line)
            self._write(line)

    def detail(self, line: str, **print_options: Any) -> None:
        """A line for the log (and the console with ``verbose``)."""
        with self.lock:
            self._write(line)
            if self.verbose:
                self._print(line)

    def status(self, where: str, what: str, since: float) -> None:
        """The live line: ``where`` (``[2/11] 01_max_speed_exit``), the time since ``since`` (a ``time.perf_counter``
        reading) and ``what`` runs now, rewritten in place; nothing when the console is not live."""
        if not self.live:
            return
        with self.lock:
            self.current = (where, what, since)
            self._draw()
        if self.tick_seconds is not None and self.ticker is None:
            self.ticker = threading.Thread(target=self._tick_until_closed, name="report-live-line", daemon=True)
            self.ticker.start()

    def tick(self) -> None:
        """Redraw the live line with its clock moved on (nothing once a printed line erased it)."""
        with self.lock:
            if self.current is not None:
                self._draw()

    def close(self) -> None:
        """Stop the clock, erase the live line (what is printed next starts at the line's beginning), close the log."""
        self.stopped.set()
        if self.ticker is not None:
            self.ticker.join()
        with self.lock:
            self._erase()
            if self.file is not None:
                self.file.close()
                self.file = None

    def __enter__(self) -> ReportConsole:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _tick_until_closed(self) -> None:
        while not self.stopped.wait(self.tick_seconds):
            self.tick()

    def _draw(self) -> None:
        where, what, since = self.current
        text = f"{where} {clock(self.now() - since)} · {what}"[: max(shutil.get_terminal_size().columns - 1, 20)]
        # Spaces over what is left of a longer previous line: a carriage return alone does not erase it.
        self.stream.write("\r" + text + " " * max(self.shown - len(text), 0))
        self.stream.flush()
        self.shown = len(text)

    def _print(self, line: str) -> None:
        self._erase()
        print(line, file=self.stream, flush=True)

    def _erase(self) -> None:
        self.current = None
        if self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0

    def _write(self, line: str) -> None:
        if self.file is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # line-buffered: `tail -f` follows the run, and a killed run's log ends at its last complete line
            self.file = open(self.log_path, "a", encoding="utf-8", buffering=1)
        self.file.write(line + "\n")


def notebook_line(where: str, seconds: float, files: Sequence[str], tables_folder: Path) -> str:
    """A notebook's one console line: ``where`` (``[2/11] 01_max_speed_exit``), its seconds, the figures and
    tables it published (``files``, paths under the output folder) and the tables among them whose speed-ups cannot
    be read (a failed A/A control), read from ``tables_folder``."""
    figures = sum(Path(name).suffix == ".png" and Path(name).parent == Path() for name in files)
    tables = [Path(name).stem for name in files if Path(name).parent == Path("tables") and name.endswith(".csv")]
    line = f"{where}: {seconds:.1f} s, {counted(figures, 'figure')}, {counted(len(tables), 'table')}"
    flagged = [table for table in tables if control_failed(tables_folder / f"{table}.csv")]
    return line + (f"; {NOT_TRUSTWORTHY} (A/A control failed): {', '.join(flagged)}" if flagged else "")


def control_failed(path: Path) -> bool:
    """Whether a timed table's speed-ups are not trustworthy: :func:`~vitstudy.verdicts.table_trust` says so for any
    of its timed groups (one control row per batch size or model) and any device's columns (``cpu_speedup`` ...).
    A table without a control row, or an untimed control, is not flagged."""
    table = pd.DataFrame()
    with contextlib.suppress(OSError, ValueError, pd.errors.ParserError):
        table = pd.read_csv(path)
    if table.empty:
        return False
    prefixes = [name.removesuffix("speedup_low") for name in table.columns if name.endswith("speedup_low")]
    controls = table[control_rows(table)]
    return any(
        table_trust(controls.loc[[row]], prefix).startswith(NOT_TRUSTWORTHY)
        for row in controls.index
        for prefix in prefixes
    )


def counted(number: int, noun: str) -> str:
    """``1 table``, ``2 tables``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour: a duration as a reader takes it in."""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` as a reader types it: relative to the working folder when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)
