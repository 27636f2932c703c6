"""Where things live, and atomic writes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def project_root() -> Path:
    """The repository checkout holding this package (editable install), else the working directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def cache_dir() -> Path:
    """Trained baselines and downloaded data: ``$VITSTUDY_CACHE``, else ``data/cache`` in the project."""
    return Path(os.environ.get("VITSTUDY_CACHE") or project_root() / "data" / "cache")


def output_dir() -> Path:
    """Where notebooks write figures: ``$VITSTUDY_OUT`` (set by the report runner), else ``figures/``."""
    return Path(os.environ.get("VITSTUDY_OUT") or project_root() / "figures")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, else vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so os.replace is a rename within one file system: atomic on POSIX. Not mkstemp: its
    # 0600 would become the published file's mode; mode 0666 here gets the umask's default (0644 under 022).
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def fingerprint(value: Any, length: int = 10, algorithm: str = "sha256") -> str:
    """A short stable hash of plain values (dicts, lists, numbers, strings; anything else by ``str``): the one way a
    cache key or a folder name is derived from settings. ``length`` and ``algorithm`` are part of existing folder
    names: a caller keeps the ones its cached folders were made with, so they are still found."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.new(algorithm, text.encode()).hexdigest()[:length]
