"""bench.compare's process isolations: one long-lived worker per arm (each builds its arm once and times a round per
message), the per-round processes kept beside it, the same result shape as one process, no process left behind."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from pathlib import Path

import pytest

from vitstudy.bench.comparison import SMOKE_TIMING, ArmSpec, compare, probe_arm

# The smoke timing (its small peak matmul too), four whole rounds, one worker per arm.
WORKERS = dataclasses.replace(SMOKE_TIMING, rounds=4, bootstrap=100, band=None, isolation="process")


def probes(folder: Path, **fail_on_call: int) -> dict[str, ArmSpec]:
    """Three arms recording their builds in ``folder/<arm>``; an arm named in ``fail_on_call`` fails on that call."""
    return {
        name: ArmSpec(
            probe_arm, {"record": str(folder / name), "seconds": 0.001, "fail_on_call": fail_on_call.get(name)}
        )
        for name in ("base", "fast", "copy")
    }


def builds(folder: Path) -> dict[str, list[int]]:
    """The pids that built each arm, in order."""
    return {path.name: [int(pid) for pid in path.read_text().split()] for path in sorted(folder.iterdir())}


def slots(comparison) -> list[list]:
    """Which arm ran in which round at which position (a round's number of timed blocks varies run to run)."""
    return comparison.raw[["arm", "round", "position"]].drop_duplicates().to_numpy().tolist()


def gone(pid: int) -> bool:
    """Whether no process has ``pid`` any more (a reaped child; the test runs long before pids wrap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_each_worker_builds_its_arm_once_for_every_round_and_gives_the_shape_one_process_gives(tmp_path):
    """Four rounds of three arms: three builds, one per arm, each in its own process (not this one); all stopped.
    The same specs timed in one process give the same raw columns, arms, rounds and positions, and row columns."""
    for name in ("apart", "here"):
        (tmp_path / name).mkdir()
    apart = compare(probes(tmp_path / "apart"), "base", "copy", WORKERS)
    pids = builds(tmp_path / "apart")
    assert {arm: len(built) for arm, built in pids.items()} == {"base": 1, "copy": 1, "fast": 1}
    workers = {built[0] for built in pids.values()}
    assert len(workers) == 3 and os.getpid() not in workers
    assert apart.rounds_used == 4 and all(gone(pid) for pid in workers)
    assert not multiprocessing.active_children()
    here = compare(probes(tmp_path / "here"), "base", "copy", dataclasses.replace(WORKERS, isolation="in_process"))
    assert list(here.raw.columns) == list(apart.raw.columns)
    assert slots(here) == slots(apart)
    assert list(here.rows().columns) == list(apart.rows().columns)
    assert list(here.rows()["arm"]) == list(apart.rows()["arm"])


def test_the_per_round_processes_are_still_there(tmp_path):
    """isolation="process_per_round": every (round, arm) builds the arm again in a fresh process."""
    compare(probes(tmp_path), "base", "copy", dataclasses.replace(WORKERS, rounds=2, isolation="process_per_round"))
    pids = builds(tmp_path)
    assert {arm: len(set(built)) for arm, built in pids.items()} == {"base": 2, "copy": 2, "fast": 2}


@pytest.fixture
def folder(tmp_path):
    """A folder for the probes' build records; made here because a missing one makes a build fail."""
    (tmp_path / "records").mkdir()
    return tmp_path / "records"


@pytest.mark.parametrize("call", [1, 5])
def test_a_failing_arm_stops_every_worker(folder, call):
    """An arm failing in its warm-up (call 1) or in a later round: one error naming the arm and what it raised, and
    no worker left running."""
    with pytest.raises(RuntimeError, match=rf"arm 'fast' failed in its worker process: RuntimeError: .*call {call}"):
        compare(probes(folder, fast=call), "base", "copy", WORKERS)
    pids = [pid for built in builds(folder).values() for pid in built]
    assert pids and all(gone(pid) for pid in pids)
    assert not multiprocessing.active_children()


def test_an_arm_that_cannot_be_built_stops_the_workers_already_started(folder):
    """The second arm's build fails (its record's folder is missing): the first worker is stopped too."""
    arms = probes(folder)
    arms["fast"] = ArmSpec(probe_arm, {"record": str(folder / "missing" / "fast")})
    with pytest.raises(RuntimeError, match=r"arm 'fast' failed in its worker process: FileNotFoundError"):
        compare(arms, "base", "copy", WORKERS)
    assert list(builds(folder)) == ["base"] and all(gone(pid) for pid in builds(folder)["base"])
    assert not multiprocessing.active_children()
