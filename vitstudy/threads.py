"""Sharing the CPU cores between the package's torch processes, so that together they never do less than one.

Two torch processes that each take every core (torch's default) thrash OpenMP's thread teams: together they run far
slower than one alone, while two 1-thread processes together run as fast as one 2-thread process (``python -m
vitstudy measure sharing`` measures it; docs/measurement.md has the readings). So every process the package starts
for torch work (a notebook kernel, a training worker, the report) registers here and takes ``max(1, cores //
processes)`` threads, the processes counted from pid files in ``<cache>/processes/``. A pid file whose process has
gone (or whose pid now belongs to another program: the start time differs) is not counted. Each process re-reads the
count whenever it calls :func:`share_cores` again (the training loop does every epoch), so a process that started
alone gives up its extra threads when a second one arrives, and takes them back when it leaves.

``OMP_NUM_THREADS`` set by the user, or ``VITSTUDY_SHARE_CORES=0``, leaves torch's setting alone.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .files import atomic_write_text, cache_dir

SWITCH_ENV = "VITSTUDY_SHARE_CORES"  # "0": never change torch's thread count


def registry_dir() -> Path:
    """Where the running package processes leave their pid files: ``<cache>/processes``."""
    return cache_dir() / "processes"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it, else the CPU count)."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), "" where the system has no /proc, None
    when no such process runs: a pid reused by another program has another start time."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]  # field 22; the name before ")" may hold spaces
    except FileNotFoundError:
        if not Path("/proc/self").exists():  # macOS: only whether the pid exists
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 0)
                return ""
        return None
    except (OSError, IndexError):
        return None


def register(pid: int | None = None, folder: Path | None = None) -> Path:
    """Write this process's pid file (its start time inside); it is removed when the process exits normally."""
    pid = os.getpid() if pid is None else pid
    path = (folder or registry_dir()) / f"{pid}.pid"
    atomic_write_text(path, start_time(pid) or "")
    if pid == os.getpid():
        atexit.register(unregister, path)
    return path


def unregister(path: Path) -> None:
    """Remove a pid file this process wrote."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def running(folder: Path | None = None, started: Callable[[int], str | None] = start_time) -> list[int]:
    """The pids of the registered processes still running (same pid, same start time), sorted."""
    folder = folder or registry_dir()
    pids = []
    for path in folder.glob("*.pid") if folder.is_dir() else ():
        with contextlib.suppress(ValueError, OSError):
            pid, recorded = int(path.stem), path.read_text().strip()
            now = started(pid)
            if now is not None and (now == recorded or not recorded or not now):
                pids.append(pid)
    return sorted(pids)


def threads_for(cores: int, processes: int) -> int:
    """Each process's share: ``max(1, cores // processes)`` (a process never gets zero threads)."""
    return max(1, cores // max(1, processes))


def share_cores(cores: int | None = None, folder: Path | None = None, pid: int | None = None) -> int:
    """Register this process (once) and set torch's threads to its share of the cores; returns the thread count.

    Call it where torch work starts and again between long stretches of it (every epoch): the count of running
    processes is read each time. Leaves the setting alone (and returns it) under ``OMP_NUM_THREADS`` or
    ``VITSTUDY_SHARE_CORES=0``.
    """
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get(SWITCH_ENV) == "0":
        return torch.get_num_threads()
    folder = folder or registry_dir()
    pid = os.getpid() if pid is None else pid
    if not (folder / f"{pid}.pid").is_file():
        register(pid, folder)
    threads = threads_for(cores or available_cores(), max(1, len(running(folder))))
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads
