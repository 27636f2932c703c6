"""Regenerate the report: run the numbered notebooks headless, collect their figures and tables atomically.

Notebooks write through ``save_figure`` / ``save_table`` into ``$VITSTUDY_OUT``. The runner points that at a
staging folder per notebook and moves the files into place only when the whole notebook succeeded, so a
failed run leaves the last good figures where they were.

Where a report goes: the default scale (``quick``) writes to ``figures/``, the committed report; any other scale
writes to ``figures/<scale>/`` unless ``out`` says otherwise, so a smoke or full run never overwrites it. One
output folder holds one scale: a run into a folder whose manifest records another scale is refused (one line
naming both and the folder to use instead) rather than started afresh, because starting afresh would leave the
other scale's figures beside the new ones with nothing saying which is which.

Staging folders live in the cache (``data/cache/report/``, ignored by git), never under ``figures/``: a report
killed with SIGKILL leaves nothing for git to pick up, and the next run removes what a dead run left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib

from . import progress
from .bench import default_device, environment_info
from .config import SCALES, get_scale
from .data import check_data
from .files import atomic_path, atomic_write_json, atomic_write_text, cache_dir, output_dir, project_root

FIGURE_FORMATS = ("png", "svg")
NAME_PATTERN = re.compile(r"^(\d\d)_[a-z0-9_]+$")
NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[a-z0-9_]+\.py$")
MANIFEST = "manifest.json"
DEFAULT_SCALE = "quick"  # the scale of the committed report in figures/


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


def _check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"output name {name!r} is not allowed: it must start with the notebook's two-digit number and use "
            "lower-case letters, digits and underscores, e.g. '00_learning_curves'"
        )
    return name


def save_figure(fig: Any, name: str, out: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write ``fig`` as PNG and SVG to the output folder (``figures/`` unless the report runner redirects it)."""
    folder = Path(out) if out is not None else output_dir()
    paths = []
    for fmt in FIGURE_FORMATS:
        path = folder / f"{_check_name(name)}.{fmt}"
        # No date and a fixed id salt: a re-generated SVG differs only where the figure does.
        with atomic_path(path) as tmp, matplotlib.rc_context({"svg.hashsalt": "vitstudy"}):
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=_figure_metadata(fmt))
        paths.append(path)
    return paths


def _figure_metadata(fmt: str) -> dict[str, Any]:
    return {"Date": None} if fmt == "svg" else {}


def save_table(frame: Any, name: str, out: str | os.PathLike[str] | None = None, floatfmt: str = ".2f") -> list[Path]:
    """Write a DataFrame as CSV and Markdown to ``tables/`` in the output folder."""
    folder = (Path(out) if out is not None else output_dir()) / "tables"
    csv_path, md_path = folder / f"{_check_name(name)}.csv", folder / f"{name}.md"
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    atomic_write_text(md_path, frame.to_markdown(index=False, floatfmt=floatfmt) + "\n")
    return [csv_path, md_path]


def save_raw(frame: Any, name: str, kind: str = "raw", out: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write the data behind a table as CSV only: raw per-call times (``kind="raw"``, ``tables/raw/``) or a
    ``torch.profiler`` operator breakdown (``kind="profiles"``, ``tables/profiles/``), so anyone can re-derive it."""
    if kind not in ("raw", "profiles"):
        raise ValueError(f"kind={kind!r} is not allowed: expected 'raw' or 'profiles'")
    path = (Path(out) if out is not None else output_dir()) / "tables" / kind / f"{_check_name(name)}.csv"
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return [path]


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


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute_notebook(
    path: Path,
    scale: str,
    staging: Path,
    timeout: int | None = None,
    executed_path: Path | None = None,
    log: Callable[..., Any] | None = None,
) -> Any:
    """Execute one jupytext notebook with papermill; raise NotebookFailed naming the cell on any exception.

    The executed copy (outputs included) goes to ``executed_path``, by default into ``staging``. With ``log``, each
    code cell's time and the kernel's progress lines (``vitstudy.progress``) are logged while it runs.
    """
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebook = jupytext.read(path)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    executed_path = executed_path or staging / f"{path.stem}.ipynb"
    hooks = CellProgress(path.stem, notebook, log).hooks() if log is not None else {}
    with _environ(VITSTUDY_OUT=str(staging), VITSTUDY_SCALE=scale, MPLBACKEND="Agg", **{progress.ENV: "lines"}):
        try:
            return papermill.execute_notebook(
                notebook,
                str(executed_path),
                parameters={"SCALE": scale},
                kernel_name="python3",
                cwd=str(path.parent),
                progress_bar=False,
                execution_timeout=timeout,
                **hooks,
            )
        except PapermillExecutionError as err:
            raise NotebookFailed(
                f"notebook {path.name} failed in cell {err.exec_count or err.cell_index} "
                f"(cell index {err.cell_index}): {err.ename}: {err.evalue} — executed copy: {executed_path}"
            ) from None


class ProgressForwarder:
    """A file-like sink for the kernel's stdout (papermill's ``stdout_file``): forwards the lines marked by
    ``vitstudy.progress`` to ``log``, drops the rest (they stay in the executed notebook)."""

    def __init__(self, prefix: str, log: Callable[..., Any]) -> None:
        self.prefix, self.log, self.pending = prefix, log, ""

    def write(self, text: str) -> None:
        *complete, self.pending = (self.pending + text).split("\n")
        for line in complete:
            if line.startswith(progress.MARK):
                self.log(f"{self.prefix}{line.removeprefix(progress.MARK)}", flush=True)

    def flush(self) -> None:
        pass  # lines are forwarded as soon as they are complete


class CellProgress:
    """One terminal line per code cell as a notebook runs: its number, its seconds, the notebook's elapsed time
    and the cell's first line, so a user sees what is running and how long each step took."""

    def __init__(self, name: str, notebook: Any, log: Callable[..., Any]) -> None:
        self.name, self.log = name, log
        self.total = sum(cell.cell_type == "code" and bool(cell.source.strip()) for cell in notebook.cells)
        self.done = 0
        self.started = self.cell_started = time.perf_counter()

    def hooks(self) -> dict[str, Any]:
        """nbclient's cell hooks and papermill's stdout sink, as ``papermill.execute_notebook`` keywords."""
        return dict(on_cell_start=self.cell_start, on_cell_executed=self.cell_executed,
                    stdout_file=ProgressForwarder(f"    {self.name} | ", self.log))  # fmt: skip

    def cell_start(self, cell: Any, cell_index: int) -> None:
        self.cell_started = time.perf_counter()

    def cell_executed(self, cell: Any, cell_index: int, execute_reply: Any) -> None:
        now = time.perf_counter()
        # papermill injects its parameters cell after the notebook was read: it gets no number of its own
        if "injected-parameters" in cell.metadata.get("tags", []):
            where = "parameters"
        else:
            self.done += 1
            where = f"cell {self.done}/{self.total}"
        first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
        first = first if len(first) <= 60 else first[:57] + "..."
        self.log(f"    {self.name} | {where} {now - self.cell_started:6.1f} s  (elapsed {_clock(now - self.started)})"
                 f"  {first}", flush=True)  # fmt: skip


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


# Seconds one cell may take at the smoke scale, where every cell takes seconds. It turns nbclient's rare lost
# reply after a cell that builds a widget (jupyter/nbclient#312: kernel idle, client waiting forever) into an
# error the runner can retry, instead of a test run that never ends. Larger scales train for hours: no limit.
SMOKE_CELL_TIMEOUT = 300
CELL_TIMEOUT_RETRIES = 1


def _execute_with_retry(path: Path, scale: str, staging: Path, executed_path: Path, log) -> None:
    """``execute_notebook``, run again once if a cell timed out (never after an exception in a cell)."""
    from nbclient.exceptions import CellTimeoutError

    timeout = SMOKE_CELL_TIMEOUT if scale == "smoke" else None
    for attempt in range(CELL_TIMEOUT_RETRIES + 1):
        try:
            execute_notebook(path, scale, staging, timeout=timeout, executed_path=executed_path, log=log)
            return
        except CellTimeoutError as err:
            if attempt == CELL_TIMEOUT_RETRIES:
                raise NotebookFailed(f"notebook {path.name}: a cell ran longer than {timeout} s ({err})") from None
            log(f"    {path.stem}: a cell timed out after {timeout} s; running the notebook again", flush=True)


def default_out(scale: str) -> Path:
    """``figures/`` for the default scale, ``figures/<scale>/`` for any other (``$VITSTUDY_OUT`` moves both)."""
    return output_dir() if scale == DEFAULT_SCALE else output_dir() / scale


def staging_root() -> Path:
    """Where notebooks write while they run, and where the last executed copy of each stays: in the cache."""
    return cache_dir() / "report"


def run_report(
    scale: str = DEFAULT_SCALE,
    only: Sequence[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    notebooks: str | os.PathLike[str] | None = None,
    log=print,
) -> dict[str, Any]:
    """Execute the chosen notebooks in order; write their files and ``manifest.json`` into ``out``.

    ``out`` defaults to ``default_out(scale)``. Everything a user can get wrong (scale, notebook names, missing
    data, an output folder of another scale) raises before the first notebook runs.
    """
    check_data(get_scale(scale).train)
    out = Path(out) if out is not None else default_out(scale)
    chosen = select_notebooks(only, notebooks, scale)
    manifest_path = out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    _check_one_scale(manifest, scale, manifest_path)
    manifest["scale"] = scale
    manifest.setdefault("notebooks", {})
    root = staging_root()
    _remove_dead_staging(root)
    for number, path in enumerate(chosen, start=1):
        log(f"[{number}/{len(chosen)}] {path.stem} (scale {scale}) ...", flush=True)
        started = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        # The pid in the name tells a later run whether the run that made this folder is still alive.
        staging = Path(tempfile.mkdtemp(prefix=f"staging-{os.getpid()}-{path.stem}-", dir=root))
        try:
            _execute_with_retry(path, scale, staging, root / f"{path.stem}.ipynb", log)
            files = _publish(staging, out, prefix=path.stem.split("_")[0])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        seconds = time.perf_counter() - started
        device = default_device()
        manifest["notebooks"][path.stem] = {
            "scale": scale,
            "seconds": round(seconds, 1),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "files": files,
            "environment": environment_info(device),
        }
        atomic_write_json(manifest_path, manifest)
        log(f"[{number}/{len(chosen)}] {path.stem} ok: {seconds:.1f} s, {len(files)} files", flush=True)
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


def _publish(staging: Path, out: Path, prefix: str) -> list[str]:
    """Move a successful notebook's files into ``out`` (one rename each) and drop its stale older files."""
    produced = []
    for sub in ("", "tables", "tables/raw", "tables/profiles"):
        source, target = staging / sub, out / sub
        if not source.is_dir():
            continue
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.is_file() and path.name.startswith(f"{prefix}_") and path.suffix != ".ipynb":
                _move(path, target / path.name)
                produced.append(str(Path(sub) / path.name))
        for path in target.glob(f"{prefix}_*"):
            if path.is_file() and str(Path(sub) / path.name) not in produced:
                path.unlink()
    return sorted(produced)


def _move(source: Path, target: Path) -> None:
    """One rename; across file systems (``$VITSTUDY_CACHE`` on another disk) a copy, then one rename."""
    try:
        os.replace(source, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
