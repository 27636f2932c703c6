"""vitstudy.executors: the local pool and Ray give every call's result; a Ray task whose worker dies is run again;
`--ray` is parsed, checked and handed to the notebook kernels' environment; without Ray, one line says how to get it."""

from __future__ import annotations

import operator
import os
import sys
from pathlib import Path
from unittest import mock

import pytest

from vitstudy import executors
from vitstudy.__main__ import main

needs_ray = pytest.mark.skipif(not executors.ray_installed(), reason="Ray is not installed (pip install '.[ray]')")


def multiply(a: int, b: int) -> int:
    return a * b


def die_on_first_attempt(marker: str, value: int) -> int:
    """A task whose first worker dies (no exception: the process is gone), and which succeeds when run again."""
    if not Path(marker).exists():
        Path(marker).touch()
        os._exit(1)
    return value * 10


@pytest.fixture(scope="module")
def ray_with_this_module(local_ray):
    """The module's Ray, sending this module's functions by value: pytest imports test modules under names that
    Ray's workers cannot import."""
    local_ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return local_ray


def test_local_pool_yields_every_result():
    """Without Ray: each call's result once, whatever the order they finish in; no calls, no pool."""
    calls = [(a, b) for a in range(3) for b in range(2)]
    # operator.mul, importable by name in any worker (this module's name is pytest's choice)
    assert sorted(executors.run_tasks(operator.mul, calls, workers=2)) == sorted(a * b for a, b in calls)
    assert list(executors.run_tasks(operator.mul, [], workers=2)) == []


@needs_ray
@pytest.mark.slow(seconds=20)
def test_ray_tasks_yield_every_result_and_leave_a_running_ray_running(ray_with_this_module):
    calls = [(a, b) for a in range(3) for b in range(2)]
    assert sorted(executors.run_tasks(multiply, calls, workers=2, ray="local")) == sorted(a * b for a, b in calls)
    assert ray_with_this_module.is_initialized()  # the caller's Ray: used, not shut down


@needs_ray
@pytest.mark.slow(seconds=20)
def test_a_task_whose_worker_dies_is_run_again(ray_with_this_module, tmp_path):
    """The first attempt's worker exits without a word; Ray runs the task again and its result comes back."""
    calls = [(str(tmp_path / f"attempted_{value}"), value) for value in (1, 2)]
    assert sorted(executors.run_tasks(die_on_first_attempt, calls, workers=2, ray="local")) == [10, 20]
    assert all(Path(marker).exists() for marker, _ in calls)


@pytest.mark.parametrize("setting", ["local", "auto", "10.0.0.5:6379", "ray://head.example:10001"])
def test_ray_settings_that_name_a_ray_are_accepted(setting, monkeypatch):
    monkeypatch.setattr(executors, "ray_installed", lambda: True)
    assert executors.check_ray(setting) == setting


@pytest.mark.parametrize("setting", ["", "08", "head node", "scratch"])
def test_a_ray_setting_that_is_no_address_is_one_line_naming_it(setting):
    with pytest.raises(ValueError, match=f"--ray {setting!r} is not allowed: give no value"):
        executors.check_ray(setting)


def test_without_ray_installed_asking_for_it_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(executors, "ray_installed", lambda: False)
    with pytest.raises(executors.RayNotInstalled, match=r"^--ray needs Ray: pip install '\.\[ray\]'$"):
        list(executors.run_tasks(multiply, [(1, 2)], workers=1, ray="local"))


@pytest.fixture
def report_runs(monkeypatch):
    """`python -m vitstudy report` with a runner that records the kernels' VITSTUDY_RAY instead of running."""
    from vitstudy.report import runner

    seen = []
    monkeypatch.setattr(runner, "run_report", lambda *args, **kwargs: seen.append(os.environ.get(executors.RAY_ENV)))
    with mock.patch.dict(os.environ):  # report_main sets VITSTUDY_RAY for the kernels: never for later tests
        os.environ.pop(executors.RAY_ENV, None)
        yield seen


@pytest.mark.parametrize(
    ("flags", "kernel_sees"),
    [([], None), (["--ray"], "local"), (["--ray", "10.0.0.5:6379"], "10.0.0.5:6379")],
    ids=["without", "local", "cluster"],
)
def test_report_passes_ray_to_the_kernels(flags, kernel_sees, report_runs, monkeypatch):
    monkeypatch.setattr(executors, "ray_installed", lambda: True)
    assert main(["report", "--scale", "smoke", "--only", "08", *flags]) == 0
    assert report_runs == [kernel_sees]


def test_report_with_ray_but_without_ray_installed_is_one_line(report_runs, monkeypatch, capsys):
    """Before any notebook runs: exit status 2 and the line that says how to install Ray."""
    monkeypatch.setattr(executors, "ray_installed", lambda: False)
    assert main(["report", "--scale", "smoke", "--only", "08", "--ray"]) == 2
    assert capsys.readouterr().err == "report: --ray needs Ray: pip install '.[ray]'\n"
    assert report_runs == []


def test_report_with_a_ray_setting_that_is_no_address_is_one_line(report_runs, capsys):
    assert main(["report", "--scale", "smoke", "--only", "08", "--ray", "scratch"]) == 2
    assert capsys.readouterr().err.startswith("report: --ray 'scratch' is not allowed: give no value")
    assert report_runs == [] and executors.RAY_ENV not in os.environ
