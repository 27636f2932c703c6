"""Execute one notebook headless: papermill with a kernel client that cannot wait for ever, and per-cell progress.

nbclient waits for a cell's ``execute_reply`` on the shell channel with no limit when the cell has none (and the
report's cells have none: training runs for hours). A reply the kernel never sends, or that never reaches the
client, then leaves both sides idle for good (seen once on a fresh clone, after a long training cell and a widget
cell, with ipykernel 7). :class:`WatchdogClient` waits in one-second slices instead and watches three things:

- the cell's ``status: idle`` on IOPub (all its outputs are in) with no reply after :attr:`reply_grace_s`: the
  reply was lost; the client makes it from the outputs (an error output makes it an error) and says so in one line;
- a kernel that is not busy and silent for :attr:`quiet_s`: the client sends a ``kernel_info`` request, which the
  kernel answers only after the requests sent before it, so its answer without the cell's reply proves the cell's
  reply was lost (a request stranded in the kernel's socket may also be woken by it);
- no answer at all for :attr:`stuck_s` while the kernel stays idle: the notebook fails with one line naming it and
  the cell (:class:`NotebookFailed`), instead of waiting for ever.

Everything a run says besides a failure goes to the caller's ``log`` (the report's log file), never straight to the
console: each cell's line, the progress lines, the watchdog's lines, papermill's warnings, and what the kernel
process and the processes it starts write to their own stdout and stderr (a library's warning on import).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any, BinaryIO
from unittest import mock

import jupytext
import papermill
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir
from nbclient.exceptions import CellExecutionComplete, CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async, run_sync
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError
from papermill.log import logger as papermill_logger
from traitlets import Any as AnyTrait
from traitlets import Unicode, default

from .. import progress
from ..files import cache_dir
from .cell_outputs import CellOutputs
from .console import clock
from .published import INJECTED_PARAMETERS

ENGINE = "vitstudy-watchdog"
# The kernel starts as under ``%matplotlib inline`` (JupyterLab's default): a figure a cell returns or displays is
# kept in the executed notebook as a PNG, where Agg keeps only its text repr. Loading the backend at start-up, rather
# than when the first figure is made, keeps a figure made under ``plt.ioff()`` (``plots.new_figure``) from being
# shown twice. The backend leaves matplotlib's settings alone, so the figures saved under figures/ do not change.
KERNEL_ARGUMENTS = ("--matplotlib=inline",)


class IPCKernelManager(AsyncKernelManager):
    """nbclient's kernel manager over local sockets, shutting kernels down without an interrupt: the console the
    kernels share with the runner stays free of lines that read as faults.

    Over TCP a kernel warns that its traffic is unencrypted; the runner's kernels live on this machine. And
    jupyter_client interrupts a kernel before asking it to shut down, which ipykernel logs as an ``ERROR``
    (``KeyboardInterrupt caught in kernel``) although papermill shuts a kernel down once its cells have ended.
    """

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc"

    @default("ip")
    def _ip_default(self) -> str:
        # The sockets' path prefix. jupyter_client's default is relative ("kernel-ipc"), i.e. in the kernel's
        # working folder, notebooks/, where a killed run would leave them; the runtime folder is where jupyter
        # keeps connection files. A socket path must stay short (about 100 bytes), hence no kernel id.
        runtime = Path(jupyter_runtime_dir())
        runtime.mkdir(parents=True, exist_ok=True)
        return str(runtime / f"vitstudy-{os.getpid()}-{secrets.token_hex(4)}-ipc")

    async def _async_interrupt_kernel(self) -> None:
        # Skipped only while shutting down: the shutdown request (on the control channel, answered even during a
        # cell) stops the kernel, and one still alive after jupyter_client's shutdown_wait_time is killed.
        if not self.shutting_down:
            await super()._async_interrupt_kernel()


class NotebookFailed(RuntimeError):
    """A notebook raised or its kernel stopped answering; the message names the notebook and the cell."""


class KernelNotAnswering(RuntimeError):
    """The kernel is idle but the cell's reply will not come (the message names the cell)."""


class WatchdogClient(PapermillNotebookClient):
    """papermill's notebook client, with a watchdog on each cell's reply (see the module docstring)."""

    notebook_name = Unicode("notebook", help="named in the watchdog's lines").tag(config=True)

    watchdog_log = AnyTrait(None, allow_none=True, help="print-like sink for the watchdog's lines").tag(config=True)
    kernel_output = AnyTrait(
        None,
        allow_none=True,
        help="a file for what the kernel process (and processes it starts) write to its own "
        "stdout and stderr, past the notebook's outputs; None: the runner's",
    ).tag(config=True)
    slice_s = 1.0  # a wait on a channel never blocks longer: a missed socket wake-up costs one slice
    reply_grace_s = 10.0  # the kernel sends the reply before the idle status: 10 s after it, the reply is lost
    quiet_s = 30.0  # a kernel not busy and silent this long gets a kernel_info probe (and another each quiet_s)
    stuck_s = 120.0  # a kernel not busy that answers no probe this long is stuck: the notebook fails

    kernel_state: str | None = None  # the last execution_state the kernel published, whatever its request
    last_heard = 0.0  # monotonic time of the last message from the kernel, on any channel
    probes: set[str] = frozenset()  # msg_ids of this cell's kernel_info probes
    probe_answered_at: float | None = None  # when the kernel first answered one, on either channel

    @default("kernel_manager_class")
    def _kernel_manager_class_default(self) -> type[AsyncKernelManager]:
        return IPCKernelManager

    @default("extra_arguments")
    def _extra_arguments_default(self) -> list[str]:
        return list(KERNEL_ARGUMENTS)

    async def _receive(self, channel: Any) -> dict[str, Any] | None:
        """The next message on ``channel``, or None after one slice without one."""
        try:
            return await ensure_async(channel.get_msg(timeout=self.slice_s))
        except Empty:
            return None

    def _hear(self, msg: dict[str, Any] | None) -> dict[str, Any] | None:
        if msg is not None:
            self.last_heard = monotonic()
            if msg["msg_type"] == "status":
                self.kernel_state = msg["content"]["execution_state"]
            if msg["parent_header"].get("msg_id") in self.probes:  # its reply, or its busy/idle on IOPub
                self.probe_answered_at = self.probe_answered_at or self.last_heard
        return msg

    async def _async_poll_output_msg(self, parent_msg_id: str, cell: Any, cell_index: int) -> None:
        # nbclient 0.11's loop, reading in slices and hearing every message (the kernel's state is in them all)
        while True:
            msg = self._hear(await self._receive(self.kc.iopub_channel))
            if msg is not None and msg["parent_header"].get("msg_id") == parent_msg_id:
                try:
                    self.process_message(msg, cell, cell_index)
                except CellExecutionComplete:
                    return

    async def _async_poll_for_reply(
        self, msg_id: str, cell: Any, timeout: int | None, task_poll_output_msg: Any, task_poll_kernel_alive: Any
    ) -> dict[str, Any]:
        try:
            return await self._watch_for_reply(msg_id, cell, timeout, task_poll_output_msg)
        finally:
            task_poll_kernel_alive.cancel()  # nbclient's liveness poll ends with the wait, whichever way it ends

    async def _watch_for_reply(
        self, msg_id: str, cell: Any, timeout: int | None, task_poll_output_msg: Any
    ) -> dict[str, Any]:
        """The cell's reply, waited for in slices; made from its outputs when lost; KernelNotAnswering when stuck."""
        deadline = None if timeout is None else monotonic() + timeout
        self.probes, self.probe_answered_at = set(), None
        self.last_heard = monotonic()  # the request just sent is the last exchange: quiet counts from it
        idle_at = first_probe_at = last_probe_at = None
        while True:
            msg = self._hear(await self._receive(self.kc.shell_channel))
            now = monotonic()
            if msg is not None and msg["parent_header"].get("msg_id") == msg_id:
                return await self._finish(msg, cell, task_poll_output_msg)
            if deadline is not None and now > deadline:  # nbclient's per-cell limit (the report sets none)
                deadline = None
                await self._async_check_alive()
                await self._async_handle_timeout(timeout, cell)  # raises, unless told to interrupt the cell
            answered = self.probe_answered_at
            if task_poll_output_msg.done():  # the cell's idle status: every output is in
                idle_at = idle_at or now
                if answered is not None or now - idle_at >= self.reply_grace_s:
                    self._say(f"{self._where(cell)}: the kernel finished but its reply was lost; continuing")
                    return _reply_from_outputs(msg_id, cell)
            elif answered is not None and now - answered >= self.reply_grace_s:
                raise KernelNotAnswering(
                    f"{self._where(cell)}: the kernel answered a later request but never ended this cell "
                    "(its reply and end of output were lost)"
                )
            elif self.kernel_state == "busy":
                first_probe_at = None  # the cell runs: however long it takes, that is no fault
            elif first_probe_at is not None and now - first_probe_at >= self.stuck_s:
                raise KernelNotAnswering(
                    f"{self._where(cell)}: the kernel is idle and has answered nothing for "
                    f"{now - first_probe_at:.0f} s since a probe (its shell channel is stuck)"
                )
            elif now - max(self.last_heard, last_probe_at or 0.0) >= self.quiet_s:
                self.probes.add(await ensure_async(self.kc.kernel_info()))
                first_probe_at, last_probe_at = first_probe_at or now, now

    async def _finish(self, msg: dict[str, Any], cell: Any, task_poll_output_msg: Any) -> dict[str, Any]:
        # nbclient 0.11's ending once the reply is in: the outputs still in flight get iopub_timeout to arrive
        try:
            await asyncio.wait_for(task_poll_output_msg, self.iopub_timeout)
        except (TimeoutError, Empty):
            if self.raise_on_iopub_timeout:
                raise CellTimeoutError.error_from_timeout_and_cell(
                    "Timeout waiting for IOPub output", self.iopub_timeout, cell
                ) from None
            self.log.warning("Timeout waiting for IOPub output")
        return msg

    async def async_wait_for_reply(self, msg_id: str, cell: Any = None) -> dict[str, Any] | None:
        """nbclient's wait; outside a cell (papermill's last kernel_info) it gives up after :attr:`stuck_s`."""
        if cell is not None:
            return await super().async_wait_for_reply(msg_id, cell)
        deadline = monotonic() + self.stuck_s
        while monotonic() < deadline:
            msg = self._hear(await self._receive(self.kc.shell_channel))
            if msg is not None and msg["parent_header"].get("msg_id") == msg_id:
                return msg
        raise KernelNotAnswering(f"{self.notebook_name}: no answer to kernel_info after the last cell")

    wait_for_reply = run_sync(async_wait_for_reply)
    _wait_for_reply = wait_for_reply

    async def async_start_new_kernel(self, **kwargs: Any) -> None:
        if self.kernel_output is not None:  # Popen's arguments, through jupyter_client's launcher
            kwargs = {"stdout": self.kernel_output, "stderr": self.kernel_output, **kwargs}
        await super().async_start_new_kernel(**kwargs)

    start_new_kernel = run_sync(async_start_new_kernel)

    def _where(self, cell: Any) -> str:
        index = next(i for i, other in enumerate(self.nb.cells) if other is cell)
        return f"{self.notebook_name} cell index {index} ({_first_line(cell, 50)})"

    def _say(self, line: str) -> None:
        if self.watchdog_log is not None:
            self.watchdog_log(f"    {line}", flush=True)
        else:
            self.log.warning(line)


def _reply_from_outputs(msg_id: str, cell: Any) -> dict[str, Any]:
    """The ``execute_reply`` a lost one would have been, from the outputs IOPub delivered."""
    error = next((out for out in cell.outputs if out.output_type == "error"), None)
    content: dict[str, Any] = {"status": "ok", "execution_count": cell.get("execution_count")}
    if error is not None:
        content = {"status": "error", "ename": error.ename, "evalue": error.evalue, "traceback": error.traceback}
    return {
        "msg_type": "execute_reply",
        "header": {"msg_type": "execute_reply"},
        "parent_header": {"msg_id": msg_id},
        "metadata": {},
        "content": content,
    }


class WatchdogEngine(NBClientEngine):
    """papermill's nbclient engine with :class:`WatchdogClient` as its client."""

    client_class: type[WatchdogClient] = WatchdogClient

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man,
        kernel_name,
        log_output=False,
        stdout_file=None,
        stderr_file=None,
        start_timeout=60,
        execution_timeout=None,
        **kwargs,
    ):
        # NBClientEngine.execute_managed_notebook's arguments, for another client class
        kwargs = {k: v for k, v in kwargs.items() if k not in ("input_path", "timeout", "startup_timeout")}
        return cls.client_class(
            nb_man,
            timeout=execution_timeout,
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=papermill_logger,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
            **kwargs,
        ).execute()


papermill_engines.register(ENGINE, WatchdogEngine)


def kernel_environment(staging: Path, scale: str) -> dict[str, str]:
    """The variables a notebook's kernel runs under: its outputs go to ``staging``, its scale is ``scale``, processes
    it starts draw without a display (the kernel itself draws inline: :data:`KERNEL_ARGUMENTS`), and progress lines
    are printed for the runner to forward."""
    return dict(VITSTUDY_OUT=str(staging), VITSTUDY_SCALE=scale, MPLBACKEND="Agg", **{progress.ENV: "lines"})


def execute_notebook(
    path: Path,
    scale: str,
    staging: Path,
    executed_path: Path | None = None,
    log: Callable[..., Any] | None = None,
    cell_seconds: list[dict[str, Any]] | None = None,
    status: Callable[[str], Any] | None = None,
) -> Any:
    """Execute one jupytext notebook with papermill; raise NotebookFailed naming the cell on any exception.

    The executed copy (outputs included) goes to ``executed_path``, by default into ``staging``. With ``log``, each
    code cell's time, the kernel's progress lines (``vitstudy.progress``), the watchdog's lines, papermill's
    warnings and the kernel process's own output are logged. ``status`` (a live line's sink) is told each cell as it
    starts and each progress line.
    ``cell_seconds`` (a list) receives one ``{"cell", "seconds", "first_line"}`` entry per executed code cell, with
    what the cell wrote (:meth:`.cell_outputs.CellOutputs.since_start`).
    """
    notebook = jupytext.read(path)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    executed_path = executed_path or staging / f"{path.stem}.ipynb"
    timed = log is not None or cell_seconds is not None or status is not None
    outputs = CellOutputs(staging, cache_dir()) if cell_seconds is not None else None
    hooks = CellProgress(path.stem, notebook, log, cell_seconds, outputs, status).hooks() if timed else {}
    prefix = f"    {path.stem} | "
    with (
        mock.patch.dict(os.environ, kernel_environment(staging, scale)),
        _papermill_warnings_to(log, prefix),
        _kernel_output_to(log, prefix) as kernel_output,
    ):
        try:
            return papermill.execute_notebook(
                notebook,
                str(executed_path),
                parameters={"SCALE": scale},
                kernel_name="python3",
                cwd=str(path.parent),
                progress_bar=False,
                engine_name=ENGINE,
                notebook_name=path.name,
                watchdog_log=log,
                kernel_output=kernel_output,
                **hooks,
            )
        except PapermillExecutionError as err:
            raise NotebookFailed(
                f"notebook {path.name} failed in cell {err.exec_count or err.cell_index} "
                f"(cell index {err.cell_index}): {err.ename}: {err.evalue} — executed copy: {executed_path}"
            ) from None
        except KernelNotAnswering as err:
            raise NotebookFailed(f"notebook {err} — executed copy: {executed_path}") from None
        except CellTimeoutError as err:
            raise NotebookFailed(
                f"notebook {path.name}: {str(err).splitlines()[0]} — executed copy: {executed_path}"
            ) from None
        except DeadKernelError:
            raise NotebookFailed(
                f"notebook {path.name}: its kernel died (a crash, or out of memory) — executed copy: {executed_path}"
            ) from None


@contextlib.contextmanager
def _kernel_output_to(log: Callable[..., Any] | None, prefix: str) -> Iterator[BinaryIO | None]:
    """A file for the kernel process's own stdout and stderr, whose lines go to ``log`` when the block ends, however
    it ends: what a kernel or its worker processes print past the notebook (a library's warning on import, a dying
    process's last words) belongs in the run's log, not on the report's console. Without ``log``: None (the
    runner's console, as before)."""
    if log is None:
        yield None
        return
    with tempfile.TemporaryFile() as output:
        try:
            yield output
        finally:
            output.seek(0)
            for line in output.read().decode(errors="replace").splitlines():
                if line.strip():
                    log(f"{prefix}kernel: {line}", flush=True)


@contextlib.contextmanager
def _papermill_warnings_to(log: Callable[..., Any] | None, prefix: str) -> Iterator[None]:
    """papermill's (and nbclient's, through it) warnings go to ``log`` while the block runs, not to stderr: the
    report's console is for its own lines, and a warning there reads as a fault to a newcomer. Errors still raise.
    Without ``log`` they go where logging sends them."""
    if log is None:
        yield
        return
    handler = _LogHandler(log, prefix)
    papermill_logger.addHandler(handler)
    propagated, papermill_logger.propagate = papermill_logger.propagate, False
    try:
        yield
    finally:
        papermill_logger.removeHandler(handler)
        papermill_logger.propagate = propagated


class _LogHandler(logging.Handler):
    def __init__(self, log: Callable[..., Any], prefix: str) -> None:
        super().__init__(logging.WARNING)
        self.sink, self.prefix = log, prefix

    def emit(self, record: logging.LogRecord) -> None:
        self.sink(f"{self.prefix}papermill {record.levelname.lower()}: {record.getMessage()}", flush=True)


class CellProgress:
    """One log line per code cell as a notebook runs: its number, its seconds, the notebook's elapsed time and the
    cell's first line, so a user sees how long each step took; and each cell as it starts to ``status``, the report's
    live line, so a user sees what is running."""

    def __init__(
        self,
        name: str,
        notebook: Any,
        log: Callable[..., Any] | None,
        cell_seconds: list[dict[str, Any]] | None = None,
        outputs: CellOutputs | None = None,
        status: Callable[[str], Any] | None = None,
    ) -> None:
        self.name, self.log, self.outputs, self.status = name, log, outputs, status
        self.cell_seconds = cell_seconds if cell_seconds is not None else []
        self.total = sum(cell.cell_type == "code" and bool(cell.source.strip()) for cell in notebook.cells)
        self.done = 0
        self.running = "starting"  # the running cell, as the log names it
        self.started = self.cell_started = time.perf_counter()

    def hooks(self) -> dict[str, Any]:
        """nbclient's cell hooks and papermill's stdout sink, as ``papermill.execute_notebook`` keywords."""
        hooks: dict[str, Any] = dict(on_cell_start=self.cell_start, on_cell_executed=self.cell_executed)
        if self.log is not None or self.status is not None:
            log = self.log if self.log is not None else _ignore
            status = self._progress_status if self.status is not None else None
            hooks["stdout_file"] = progress.Forwarder(f"    {self.name} | ", log, status)
        return hooks

    def _progress_status(self, line: str) -> None:
        self.status(f"{self.running}: {line}")  # the cell stays named while its progress lines come

    def cell_start(self, cell: Any, cell_index: int) -> None:
        if cell.cell_type != "code" or not cell.source.strip():
            return  # nbclient calls this hook for every cell, and executes only these
        if self.outputs is not None:
            self.outputs.start()
        self.cell_started = time.perf_counter()
        self.running = self._where(cell, self.done + 1)
        if self.status is not None:
            self.status(f"{self.running}: {_first_line(cell)}")

    def _where(self, cell: Any, number: int) -> str:
        # papermill injects its parameters cell after the notebook was read: it gets no number of its own
        injected = INJECTED_PARAMETERS in cell.metadata.get("tags", [])
        return PARAMETERS if injected else f"cell {number}/{self.total}"

    def cell_executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        now = time.perf_counter()
        where = self._where(cell, self.done + 1)
        self.done += where != PARAMETERS
        first = _first_line(cell)
        seconds = now - self.cell_started
        # Kept for the manifest, so a reader sees where a report's time went without re-running it.
        wrote = self.outputs.since_start() if self.outputs is not None else {}
        self.cell_seconds.append({"cell": where, "seconds": round(seconds, 1), "first_line": first, **wrote})
        if self.log is None:
            return
        self.log(
            f"    {self.name} | {where} {seconds:6.1f} s  (elapsed {clock(now - self.started)})  {first}", flush=True
        )


PARAMETERS = "parameters"  # papermill's injected parameters cell, as the log and the manifest name it


def _first_line(cell: Any, width: int = 60) -> str:
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    return first if len(first) <= width else first[: width - 3] + "..."


def _ignore(*args: Any, **kwargs: Any) -> None:
    pass
