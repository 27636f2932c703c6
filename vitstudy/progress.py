"""Progress lines that reach the report from inside a notebook.

A notebook run by the report prints into its kernel, whose output lands in the executed notebook, not on the
terminal; tqdm in a kernel even draws a widget. The report therefore sets ``VITSTUDY_PROGRESS=lines``: code that
runs long (training) then prints plain lines starting with :data:`MARK`, and the report forwards exactly those
lines to its log (:class:`Forwarder`), and to its live line on a terminal. Without the variable nothing is printed:
notebooks opened in JupyterLab keep their tqdm bars only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

ENV = "VITSTUDY_PROGRESS"
MARK = "[progress] "
EVERY_SECONDS = 30.0  # a line inside an epoch at most this often: long epochs show movement, short ones stay quiet


def enabled() -> bool:
    return os.environ.get(ENV) == "lines"


def emit(text: str) -> None:
    """Print one progress line for the report to forward (only when the report asked for them)."""
    if enabled():
        print(MARK + text, flush=True)


class EpochProgress:
    """Progress of one training epoch: a line every :data:`EVERY_SECONDS` while it runs, one when it ends."""

    def __init__(self, epoch: int, epochs: int, total_images: int, active: bool = True) -> None:
        self.label, self.total, self.active = f"epoch {epoch + 1}/{epochs}", total_images, active and enabled()
        self.started = self.last_line = time.perf_counter()
        self.images = 0

    def step(self, images: int) -> None:
        self.images += images
        now = time.perf_counter()
        if self.active and now - self.last_line >= EVERY_SECONDS:
            self.last_line = now
            rate = self.images / (now - self.started)
            emit(f"{self.label}: {self.images}/{self.total} images, {rate:.1f} im/s, {now - self.started:.0f} s")

    def done(self, stats: dict[str, float]) -> None:
        if self.active:
            emit(
                f"{self.label} done: {stats['images_per_s']:.1f} im/s, loss {stats['loss']:.3f}, "
                f"train top-1 {stats['top1']:.1f}%, {stats['seconds']:.1f} s"
            )


class Forwarder:
    """A file-like sink for the kernel's stdout (papermill's ``stdout_file``): forwards the lines marked by
    :func:`emit` to ``log`` with ``prefix`` (and, without it, to ``status``: the report's live line), drops the rest
    (they stay in the executed notebook)."""

    def __init__(self, prefix: str, log: Callable[..., Any], status: Callable[[str], Any] | None = None) -> None:
        self.prefix, self.log, self.status, self.pending = prefix, log, status, ""

    def write(self, text: str) -> None:
        *complete, self.pending = (self.pending + text).split("\n")
        for line in complete:
            if line.startswith(MARK):
                self.log(f"{self.prefix}{line.removeprefix(MARK)}", flush=True)
                if self.status is not None:
                    self.status(line.removeprefix(MARK))

    def flush(self) -> None:
        pass  # lines are forwarded as soon as they are complete
