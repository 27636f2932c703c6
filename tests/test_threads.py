"""vitstudy.threads: the package's processes share the cores (fake pids, fake core counts; nothing timed)."""

from __future__ import annotations

import os

import pytest
import torch

from vitstudy import threads


@pytest.fixture
def own_threads(monkeypatch):
    """Sharing switched on whatever the test run set (xdist sets OMP_NUM_THREADS); torch's setting restored."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(threads.SWITCH_ENV, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def fake_starts(table: dict[int, str]):
    """A start_time that knows only the processes in ``table`` (pid -> start time)."""
    return lambda pid: table.get(pid)


@pytest.mark.parametrize(("cores", "processes", "expected"), [(8, 1, 8), (8, 2, 4), (8, 3, 2), (2, 2, 1), (2, 5, 1)])
def test_threads_are_the_cores_divided_never_zero(cores, processes, expected):
    """cores // processes, at least one thread each."""
    assert threads.threads_for(cores, processes) == expected


def test_running_ignores_stale_and_reused_pids(tmp_path):
    """A pid file counts only while its process runs with the start time it recorded."""
    for pid, started in ((101, "500"), (102, "600"), (103, "700")):
        threads.register(pid, tmp_path).write_text(started)
    alive = fake_starts({101: "500", 102: "999"})  # 102: the pid now belongs to another program; 103 is gone
    assert threads.running(tmp_path, alive) == [101]


def test_share_cores_splits_among_registered_processes(tmp_path, own_threads, monkeypatch):
    """With another live package process registered, this one takes half of 4 cores; alone, all of them."""
    other = threads.register(os.getppid(), tmp_path)  # a process that really runs: our parent
    assert threads.share_cores(cores=4, folder=tmp_path) == 2
    assert torch.get_num_threads() == 2
    assert (tmp_path / f"{os.getpid()}.pid").is_file()
    other.unlink()
    assert threads.share_cores(cores=4, folder=tmp_path) == 4 and torch.get_num_threads() == 4


def test_user_thread_setting_wins(tmp_path, own_threads, monkeypatch):
    """OMP_NUM_THREADS (or VITSTUDY_SHARE_CORES=0) leaves torch's thread count and the registry alone."""
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.share_cores(cores=8, folder=tmp_path) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv(threads.SWITCH_ENV, "0")
    assert threads.share_cores(cores=8, folder=tmp_path) == 1
    assert not list(tmp_path.glob("*.pid"))


def test_unregister_removes_only_its_own_file(tmp_path):
    """Leaving removes this process's pid file; another process's stays."""
    mine, other = threads.register(os.getpid(), tmp_path), threads.register(os.getppid(), tmp_path)
    threads.unregister(mine)
    assert not mine.exists() and other.exists()
