"""What a notebook writes for the report: figures (PNG + SVG), tables (CSV + Markdown) and the raw data behind them.

Every file goes to the output folder, ``figures/`` unless ``$VITSTUDY_OUT`` says otherwise (the report runner points
it at a staging folder while a notebook runs). A name starts with the notebook's two-digit number, so the runner
knows whose file it is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import matplotlib

from ..files import atomic_path, atomic_write_text, output_dir

FIGURE_FORMATS = ("png", "svg")
NAME_PATTERN = re.compile(r"^(\d\d)_[a-z0-9_]+$")


def check_name(name: str) -> str:
    """``name`` if it is a good output name (``00_learning_curves``); else one ValueError line with an example."""
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"output name {name!r} is not allowed: it must start with the notebook's two-digit number and use "
            "lower-case letters, digits and underscores, e.g. '00_learning_curves'"
        )
    return name


def save_figure(fig: Any, name: str, out: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write ``fig`` as PNG and SVG to the output folder (``figures/`` unless the report runner redirects it)."""
    folder = Path(out) if out is not None else output_dir()
    return write_figure(fig, folder / check_name(name))


def write_figure(fig: Any, stem: str | os.PathLike[str]) -> list[Path]:
    """Write ``fig`` atomically as ``stem.png`` and ``stem.svg``; returns the paths."""
    paths = []
    for fmt in FIGURE_FORMATS:
        path = Path(f"{stem}.{fmt}")
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
    csv_path, md_path = folder / f"{check_name(name)}.csv", folder / f"{name}.md"
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    atomic_write_text(md_path, frame.to_markdown(index=False, floatfmt=floatfmt) + "\n")
    return [csv_path, md_path]


def save_raw(frame: Any, name: str, kind: str = "raw", out: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write the data behind a table as CSV only: raw per-call times (``kind="raw"``, ``tables/raw/``) or a
    ``torch.profiler`` operator breakdown (``kind="profiles"``, ``tables/profiles/``), so anyone can re-derive it."""
    if kind not in ("raw", "profiles"):
        raise ValueError(f"kind={kind!r} is not allowed: expected 'raw' or 'profiles'")
    path = (Path(out) if out is not None else output_dir()) / "tables" / kind / f"{check_name(name)}.csv"
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return [path]
