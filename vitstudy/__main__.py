"""Command line: ``python -m vitstudy {report,train,data} ...``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

USAGE = """usage: python -m vitstudy COMMAND [options]

commands:
  report   execute the numbered notebooks and regenerate figures/ (--scale, --only, --out)
  train    train one model into a run folder; resumes if interrupted (works under torchrun)
  data     make sure the default data set (Fashion-MNIST) is present, installing it if it can
"""


def parse_overrides(pairs: Sequence[str], cls: type) -> dict[str, Any]:
    """``key=value`` strings into dataclass field values (JSON where it parses, else the raw string)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r} is not key=value")
        if key not in fields:
            raise ValueError(f"--set {key!r} is not a setting: choose among {', '.join(sorted(fields))}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def train_main(argv: Sequence[str]) -> int:
    from .config import TrainConfig, get_scale
    from .train import train

    parser = argparse.ArgumentParser(prog="python -m vitstudy train")
    parser.add_argument("--scale", default=None, help="start from this scale's settings (default: quick)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--no-resume", action="store_true", help="start over even if run-dir has a checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        cfg = dataclasses.replace(get_scale(args.scale).train, **parse_overrides(args.overrides, TrainConfig))
    except (ValueError, TypeError) as err:
        print(f"train: {err}", file=sys.stderr)
        return 2
    result = train(cfg, args.run_dir, resume=not args.no_resume, progress=not args.quiet)
    print(json.dumps({k: result.metrics[k] for k in ("test_top1", "val_top1", "epochs", "world_size")}))
    return 0


def data_main(argv: Sequence[str]) -> int:
    from .data import DataNotFound, ensure_fashion_mnist

    parser = argparse.ArgumentParser(prog="python -m vitstudy data")
    parser.add_argument("--root", default=None, help="look only here")
    parser.add_argument("--no-install", action="store_true", help="only look, never install or download")
    args = parser.parse_args(argv)
    try:
        folder = ensure_fashion_mnist(install=not args.no_install, root=args.root)
    except DataNotFound as err:
        print(err, file=sys.stderr)
        return 1
    print(f"Fashion-MNIST: {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "report":
        from .report import main as report_main

        return report_main(rest)
    if command == "train":
        return train_main(rest)
    if command == "data":
        return data_main(rest)
    print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
