"""Running independent calls side by side: in local single-thread worker processes, or as tasks on Ray.

:func:`run_tasks` is the one way the package fans out long, independent, resumable work (notebook 08's
from-scratch runs): it yields each call's result as soon as that call finishes, whichever runs it.

- Without Ray (the default): a pool of ``workers`` processes started from a forkserver, which imports the heavy
  modules (``preload``) once, so a worker starts in a fraction of a second instead of importing torch again.
- ``ray="local"``: a Ray started for these calls on this machine with ``workers`` CPUs, shut down afterwards.
- ``ray=ADDRESS`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``): the Ray cluster already running there; each call
  is a one-CPU task, so the cluster's CPUs, not ``workers``, decide how many run at once. Its nodes need the package
  installed and the same paths the calls write to (a shared ``$VITSTUDY_CACHE``).

On Ray a worker that dies (a node lost, a process killed for memory) has its task run again, up to
:data:`RAY_RETRIES` times; the calls are written to be resumed (a training run restarts from its last epoch's
checkpoint), so a retry repeats little. An exception the call raises is not retried: it comes back at once.
Ray is imported only when asked for; without it installed, asking says how to install it in one line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from types import ModuleType
from typing import Any

RAY_ENV = "VITSTUDY_RAY"  # how `python -m vitstudy report --ray [ADDRESS]` reaches a notebook's kernel
LOCAL_RAY = "local"  # start a Ray on this machine for the calls, and stop it after
RAY_RETRIES = 3  # reruns of a task whose worker died
MISSING_RAY = "--ray needs Ray: pip install '.[ray]'"
# "local", "auto" (the cluster this machine belongs to) or a head node's HOST:PORT, optionally as a Ray client URL
RAY_SETTING = re.compile(r"local|auto|(ray://)?[\w.\-\[\]:]+:\d+")


def default_workers() -> int:
    """Processes that run the calls side by side: one single-thread process per core on a CPU (a 2-thread training
    process collapses whenever anything else runs on a shared 2-core machine, one single-thread process per core
    does not), one on a GPU."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


class RayNotInstalled(ValueError):
    """``--ray`` (or ``$VITSTUDY_RAY``) was given where Ray is not installed: a setting this environment cannot
    honour, reported like any other bad setting."""


def check_ray(setting: str) -> str:
    """``setting`` if it names a Ray (``local`` or a cluster's address) and Ray is installed; otherwise one clear
    error naming the value or the missing package."""
    if not RAY_SETTING.fullmatch(setting):
        raise ValueError(
            f"--ray {setting!r} is not allowed: give no value (a Ray on this machine) or a cluster's address "
            "(auto, HOST:PORT or ray://HOST:PORT)"
        )
    if not ray_installed():
        raise RayNotInstalled(MISSING_RAY)
    return setting


def ray_installed() -> bool:
    """Whether Ray can be imported here, without importing it (which takes seconds)."""
    return importlib.util.find_spec("ray") is not None


def run_tasks(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    workers: int,
    ray: str | None = None,
    preload: Sequence[str] = (),
) -> Iterator[Any]:
    """Yield ``fn(*call)`` for every call in ``calls``, in the order they finish.

    ``fn`` must be a module-level function (it is sent to the workers by name). Without ``ray``: ``workers``
    forkserver processes that import ``preload`` once; with ``ray``: one-CPU Ray tasks (see the module's docstring).
    """
    if not calls:
        return
    if ray is None:
        yield from _local_pool(fn, calls, workers, preload)
    else:
        yield from _ray_tasks(fn, calls, workers, check_ray(ray))


def _local_pool(
    fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], workers: int, preload: Sequence[str]
) -> Iterator[Any]:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(fn, *call) for call in calls]
        for future in as_completed(futures):
            yield future.result()


def _ray_tasks(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], workers: int, setting: str) -> Iterator[Any]:
    import ray  # only when asked for: it is an optional dependency

    with ray_session(ray, setting, workers):
        task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(fn)
        pending = [task.remote(*call) for call in calls]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])


@contextlib.contextmanager
def ray_session(ray: ModuleType, setting: str, workers: int) -> Iterator[None]:
    """Ray connected for the block: a Ray already started in this process (a notebook's, a test's) is used as it is
    and left running; otherwise a local one with ``workers`` CPUs is started, or the cluster at ``setting`` joined,
    and left (shut down, or disconnected from) at the end."""
    if ray.is_initialized():
        yield
        return
    # The calls' output goes to their own files; Ray's per-worker logs would only interleave with the caller's.
    quiet = dict(log_to_driver=False, logging_level="warning")
    if setting == LOCAL_RAY:
        ray.init(num_cpus=workers, include_dashboard=False, **quiet)
    else:
        try:
            ray.init(address=setting, **quiet)
        except ConnectionError as err:
            raise ConnectionError(
                f"--ray {setting}: no Ray cluster answered there ({err}); start one (ray start --head) or give "
                "its address"
            ) from err
    try:
        yield
    finally:
        ray.shutdown()
