"""Command line: ``python -m vitstudy {report,results,train,data,measure,trained_rules,gpu} ...``.

A mistake a user can fix (a bad setting, scale, model name, path; missing or damaged data) is printed as one
line naming the value and the fix, with exit status 2; a failed notebook exits 1. ``VITSTUDY_DEBUG=1`` shows
the full traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

# Only light modules at the top: `--help` and a user's mistake answer before torch would have loaded (seconds);
# each command imports what it runs.
from .config import SCALES, TrainConfig, check_choice, get_scale
from .errors import CorruptImageError, PretrainedWeightsUnavailable

USAGE = """usage: python -m vitstudy COMMAND [options]

commands:
  report   execute the numbered notebooks and regenerate figures/ (--scale, --only, --out, --verbose)
  results  regenerate RESULTS.md from the committed tables in figures/ (--check: is it current?)
  train    train one model into a run folder; resumes if interrupted (works under torchrun)
  data     make sure the default data set (Fashion-MNIST) is present, installing it if it can
  measure  run one hand-run measurement: isolation, loader_speed, widget_latency, compile, sharing or report_time
  trained_rules  train notebook 11's trained token-rules runs that are missing (resumable; no timing: the report
           at --scale scratch --only 11 times, aggregates and publishes them)
  gpu      the one prepared GPU command: the CUDA tests and every GPU column, under figures/gpu/

A mistake in the options or the data is one line on stderr and exit status 2 (VITSTUDY_DEBUG=1: a traceback).
"""

# What a user's mistake raises: settings and names (ValueError), a model that is not a ViT (TypeError), files
# and data (FileNotFoundError, DataNotFound among them), damaged images, weights that cannot be had offline.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, CorruptImageError, PretrainedWeightsUnavailable)


def parse_overrides(pairs: Sequence[str], cls: type) -> dict[str, Any]:
    """``key=value`` strings into dataclass field values: JSON where it parses, else the raw string.

    Each value is checked against the field's annotation, so ``epochs=ten`` names the field and the type it
    needs instead of failing later inside a comparison. A text field takes the raw text (``model=123``).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r} is not key=value")
        if key not in fields:
            raise ValueError(f"--set {key!r} is not a setting: choose among {', '.join(sorted(fields))}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides[key] = _typed(key, value, raw, hints[key])
    return overrides


def _typed(key: str, value: Any, raw: str, hint: Any) -> Any:
    options = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        base = typing.get_origin(option) or option  # dict[str, Any] -> dict
        if base is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)  # lr=1 and lr=1.0 are one setting (and one run fingerprint)
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base not in (int, float) and isinstance(value, base):
            return value
    if str in options:
        return raw
    expected = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
    raise ValueError(f"--set {key}={raw} is not allowed: expected {expected}, written as JSON (10, 0.5, true, null)")


def report_main(argv: Sequence[str]) -> int:
    from . import executors  # light: Ray itself is imported only where runs are trained
    from .report import runner  # papermill, jupytext and torch: only for this command
    from .report.console import ReportConsole, shown

    parser = argparse.ArgumentParser(prog="python -m vitstudy report", description=runner.__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        default=os.environ.get("VITSTUDY_SCALE", runner.DEFAULT_SCALE),
        help=f"one of {', '.join(SCALES)} (default: $VITSTUDY_SCALE, else {runner.DEFAULT_SCALE})",
    )
    parser.add_argument("--only", nargs="*", default=None, help="notebook numbers or names, e.g. 00 02")
    parser.add_argument(
        "--out", default=None, help=f"output folder (default: figures/ at {runner.DEFAULT_SCALE}, else figures/SCALE/)"
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const=executors.LOCAL_RAY,
        default=os.environ.get(executors.RAY_ENV) or None,
        metavar="ADDRESS",
        help="train notebook 08's runs as Ray tasks: on a Ray started here (no ADDRESS) or on the cluster at "
        f"ADDRESS (auto, HOST:PORT, ray://HOST:PORT; default: ${executors.RAY_ENV}, else local processes)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print each cell's seconds and the notebooks' progress lines too (the run's log file always has them)",
    )
    args = parser.parse_args(argv)
    if args.ray is not None:  # checked before hours of notebooks; the kernels inherit this process's environment
        os.environ[executors.RAY_ENV] = executors.check_ray(args.ray)
    with ReportConsole(runner.log_path(args.scale), verbose=args.verbose) as console:
        try:
            runner.run_report(
                args.scale, args.only, args.out, log=console.say, detail=console.detail, status=console.status
            )
        except runner.NotebookFailed as err:
            console.detail(f"report failed: {err}")
            console.close()  # the live line erased: the failure starts a line of its own
            print(f"report failed: {err} — log: {shown(console.log_path)}", file=sys.stderr)
            return 1
        console.say(f"log (each cell's seconds, the training progress): {shown(console.log_path)}")
    return 0


def results_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitstudy results", description="regenerate RESULTS.md")
    parser.add_argument("--check", action="store_true", help="only check: exit 1 if RESULTS.md is not current")
    parser.add_argument("--figures", default=None, help="the tables' folder (default: figures/)")
    parser.add_argument("--output", default=None, help="the file (default: RESULTS.md at the project root)")
    args = parser.parse_args(argv)
    from .report import results  # pandas and matplotlib, never torch: answers in seconds

    try:
        if not args.check:
            print(f"wrote {results.write_results(args.figures, args.output)}")
            return 0
        current = results.is_current(args.figures, args.output)
    except results.NoTables as err:  # a mistyped folder must not overwrite RESULTS.md with "not run yet"
        print(f"results: {err}", file=sys.stderr)
        return 2
    if current:
        return 0
    path = args.output or results.results_path()
    print(f"{path} is not current: run python -m vitstudy results", file=sys.stderr)
    return 1


def train_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitstudy train")
    parser.add_argument("--scale", default=None, help="start from this scale's settings (default: quick)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--no-resume", action="store_true", help="start over even if run-dir has a checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    from .train import train  # torch and timm: after the arguments parsed

    cfg = dataclasses.replace(get_scale(args.scale).train, **parse_overrides(args.overrides, TrainConfig))
    result = train(cfg, args.run_dir, resume=not args.no_resume, progress=not args.quiet)
    print(json.dumps({k: result.metrics[k] for k in ("test_top1", "val_top1", "epochs", "world_size")}))
    return 0


def data_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitstudy data")
    parser.add_argument("--root", default=None, help="look only here")
    parser.add_argument("--no-install", action="store_true", help="only look, never install or download")
    args = parser.parse_args(argv)
    from .fashion_mnist import ensure_fashion_mnist  # torchvision: after the arguments parsed

    folder = ensure_fashion_mnist(install=not args.no_install, root=args.root)
    print(f"Fashion-MNIST: {folder}")
    return 0


# The hand-run measurements: each is vitstudy.measure.<module>, whose measure() runs it and writes its table.
MEASUREMENTS = {
    "isolation": "isolation",
    "loader_speed": "loader_speed",
    "widget_latency": "widget_latency",
    "compile": "compile_speed",
    "sharing": "core_sharing",
    "report_time": "report_time",
    "bf16": "bf16",
}


def measure_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitstudy measure")
    parser.add_argument("name", help=f"one of {', '.join(MEASUREMENTS)}")
    args = parser.parse_args(argv)
    name = check_choice("measure", args.name, tuple(MEASUREMENTS))
    importlib.import_module(f"vitstudy.measure.{MEASUREMENTS[name]}").measure()
    return 0


def trained_rules_main(argv: Sequence[str]) -> int:
    from . import executors  # light: no torch

    parser = argparse.ArgumentParser(
        prog="python -m vitstudy trained_rules",
        description="train the missing runs of notebook 11's trained curve side by side (resumable, no timing)",
    )
    parser.add_argument("--scale", default="scratch", help="scratch (the protocol, default) or smoke")
    parser.add_argument("--workers", type=int, default=None, help="single-thread processes (default: one per core)")
    parser.add_argument(
        "--ray", nargs="?", const=executors.LOCAL_RAY, default=None, metavar="ADDRESS", help="train as Ray tasks"
    )
    args = parser.parse_args(argv)
    check_choice("scale", args.scale, ("scratch", "smoke"))
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers {args.workers} is not allowed: expected an integer >= 1")
    if args.ray is not None:
        os.environ[executors.RAY_ENV] = executors.check_ray(args.ray)
    from .experiments import token_rules_trained  # torch and timm: after the arguments parsed

    chosen = token_rules_trained.budget(args.scale)
    workers = args.workers or chosen.train_workers
    trained = token_rules_trained.train_missing(chosen, workers, log=lambda line: print(line, flush=True))
    print(f"trained {trained} runs; every run of the {args.scale} protocol has finished", flush=True)
    return 0


def gpu_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitstudy gpu", description="the one prepared GPU command")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny: the CPU test)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and sizes: the same path in seconds")
    parser.add_argument("--out", default=None, help="output folder (default: figures/gpu)")
    parser.add_argument("--only", nargs="*", default=None, help="some of the steps (default: all)")
    parser.add_argument("--nccl-check", action="store_true", help=argparse.SUPPRESS)  # torchrun's child
    args = parser.parse_args(argv)
    from .tools import gpu_run  # torch, timm, pandas: after the arguments parsed

    if args.nccl_check:
        print(json.dumps(gpu_run.nccl_check()), flush=True)
        return 0
    check_choice("device", args.device, ("cuda", "cpu"))
    steps = [check_choice("step", s, gpu_run.STEPS) for s in args.only] if args.only else gpu_run.STEPS
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' is not allowed here: no CUDA device; run --device cpu --tiny on a CPU")
    budget = gpu_run.BUDGETS["tiny" if args.tiny else "gpu"]
    summary = gpu_run.run_gpu(budget, args.device, args.out, steps, log=lambda line: print(line, flush=True))
    return 0 if (summary["status"] == "done").all() else 1


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "report": report_main,
    "results": results_main,
    "train": train_main,
    "data": data_main,
    "measure": measure_main,
    "trained_rules": trained_rules_main,
    "gpu": gpu_main,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](rest)
    except USER_ERRORS as err:
        if os.environ.get("VITSTUDY_DEBUG"):
            raise
        print(f"{command}: {' '.join(str(err).splitlines())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
