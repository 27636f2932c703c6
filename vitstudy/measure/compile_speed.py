"""Do both wrappers compile, where does the graph break, and what does ``torch.compile`` buy?

A hand-run measurement (a timing is no pass/fail on a shared CPU): on a QUIET machine, run

    python -m vitstudy measure compile

For every wrapper setting (:data:`SETTINGS`: the plain timm model, ``MultiExitViT`` forced out and under each exit
policy, SkipViT in each mode) on the default model, and for one setting per wrapper on ViT-S/16, it records whether
``torch.compile`` runs and gives eager's output (:data:`TOLERANCE`), the graphs and graph breaks
``torch._dynamo.explain`` finds, and the compiled model's speed-up over eager for an inference forward and for a
training step, each timed by :func:`vitstudy.bench.compare` against eager and eager's A/A copy. Compiling changes no
FLOP, so every row's FLOP ideal is 1.00: a speed-up above it is fewer memory passes and less Python, which the
FLOP-bound verdict flags until a profile explains it. :func:`measure` writes ``figures/tables/19_compile.{csv,md}``
and the raw times. Each finished (model, setting) row is kept in the cache (:func:`row_folder`), so a run stopped
half-way (a ViT-S/16 row compiles three times and times training steps of seconds each) resumes at the row it was
on. A row's arms are always timed together in one sitting; its ``date`` says when.

What does not compile in one graph, and why: the exit policies decide how many images go on after each exit
(``MultiExitViT.forward``'s one host sync per exit), so the next block's batch size is data, not code; the sync
sits inside the loop over exits, so dynamo runs that loop in Python and compiles the blocks and exit heads between
the syncs frame by frame (recompiling once when the batch size first varies). Removing the sync would mean running
every image through every block: the saving the policy exists for.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters

from .. import bench, report
from ..bench import SMOKE_TIMING
from ..config import check_choice, scale_budget
from ..files import atomic_path, cache_dir, fingerprint, project_root
from ..models import create_model
from ..multiexit import MultiExitViT
from ..skipvit import HEADLINE, TABLE1, SkipViTSettings, apply_skipvit, configure
from ..steps import random_batch_step

TABLE = "19_compile"
ROW_FILE = "row.csv"  # one finished row of the table, kept in the cache (see row_folder)
TOLERANCE = dict(rtol=1e-3, atol=1e-4)  # compiled vs eager logits: fused kernels sum in another order
SETTINGS = (
    "plain",
    "exit forced 6",
    "exit policy batch",
    "exit policy sample",
    "skipvit skip",
    "skipvit fused",
    "skipvit drop",
)
SKIPVIT_MODES = {
    "skipvit skip": TABLE1[HEADLINE],
    "skipvit fused": TABLE1["fused_6_45"],
    "skipvit drop": SkipViTSettings((6,), (0.55,), mode="drop"),
}


@dataclass(frozen=True)
class CompileModel:
    """One model the table compiles: its timm name, input, batch sizes and extra ``create_model`` arguments."""

    name: str
    input_size: tuple[int, int, int]
    inference_batch: int
    training_batch: int
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    settings: tuple[str, ...] | None = None  # the rows on this model; None: the budget's


@dataclass(frozen=True)
class CompileBudget:
    """How the compile table is made at one scale."""

    scale: str
    models: tuple[CompileModel, ...]
    timing: bench.CompareSettings
    backend: str = "inductor"  # torch.compile's default
    settings: tuple[str, ...] = SETTINGS


DEFAULT_MODEL = CompileModel("vitstudy_tiny_patch4_28", (1, 28, 28), 64, 64)
# ViT-S/16 gets one row per wrapper (the plain model, the per-sample exit: the one that breaks the graph, SkipViT's
# headline): a ViT-S/16 row compiles its forward and its training step, ~4 minutes each on a 2-core CPU, so all
# seven would take the hand-run past 40 minutes. The default model has every setting.
VIT_SMALL = CompileModel(
    "vit_small_patch16_224", (3, 224, 224), 16, 16, settings=("plain", "exit policy sample", "skipvit skip")
)
BUDGETS: dict[str, CompileBudget] = {
    # Smoke: a depth-12 tiny model at 2 images and aot_eager (no code generation): every code path in seconds.
    "smoke": CompileBudget(
        "smoke",
        (dataclasses.replace(DEFAULT_MODEL, inference_batch=4, training_batch=4),),
        SMOKE_TIMING,
        backend="aot_eager",
    ),
    # Quick: warm-up covers compilation (the first calls); 5 rounds of 0.5 s per arm.
    "quick": CompileBudget(
        "quick", (DEFAULT_MODEL, VIT_SMALL), bench.CompareSettings(rounds=5, min_run_time=0.5, warmup_calls=3)
    ),
}


def budget(scale: str | None = None) -> CompileBudget:
    """The compile table's budget at ``scale`` (:func:`vitstudy.config.scale_budget`)."""
    return scale_budget(BUDGETS, scale)


class Logits(nn.Module):
    """A ``MultiExitViT``'s logits alone (what a loss and a timed forward need), ``[B, C, H, W] -> [B, classes]``."""

    def __init__(self, model: MultiExitViT) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def operating_threshold(model: MultiExitViT, images: torch.Tensor) -> float:
    """The median first-exit confidence of ``images``: about half the batch leaves at the first exit, the rest
    go on (so the compaction and the later exits run, whatever the weights)."""
    with torch.no_grad():
        return model(images).confidence[:, 0].median().item()


def wrapped(setting: str, vit: nn.Module, images: torch.Tensor) -> nn.Module:
    """``setting`` (one of :data:`SETTINGS`) on a copy of ``vit``, returning logits ``[B, classes]``."""
    check_choice("setting", setting, SETTINGS)
    vit = copy.deepcopy(vit)
    if setting == "plain":
        return vit
    if setting in SKIPVIT_MODES:
        return configure(apply_skipvit(vit), SKIPVIT_MODES[setting])
    if setting == "exit forced 6":
        return Logits(MultiExitViT(vit, forced_exit=6))
    model = MultiExitViT(vit, policy=setting.rsplit(" ", 1)[1])
    model.threshold = operating_threshold(model.eval(), images)
    return Logits(model)


def graph_report(model: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """What ``torch._dynamo.explain`` finds in one eval forward: graphs, graph breaks, frames dynamo gave up on
    (run eagerly) and the break reasons (dynamo's counters: ``explain`` leaves them out when it skips a frame)."""
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        explained = torch._dynamo.explain(model.eval())(images)
    found = [*counters["graph_break"], *counters["unimplemented"], *(str(r.reason) for r in explained.break_reasons)]
    reasons = dict.fromkeys(_reason(text) for text in found)
    frames = counters["frames"]
    return {
        "graphs": explained.graph_count,
        "graph_breaks": explained.graph_break_count,
        "frames_run_eagerly": frames["total"] - frames["ok"],
        "break_reasons": "; ".join(reasons),
    }


def _reason(text: str) -> str:
    """Dynamo's reason in one line: its first line, and whether the break sat in a loop (the frame runs eagerly)."""
    loop = " (inside a loop: dynamo runs that frame eagerly)" if "graph break in loop" in text else ""
    return text.strip().splitlines()[0][:100] + loop


def compiled_matches(
    model: nn.Module, images: torch.Tensor, backend: str, compiled: nn.Module | None = None
) -> dict[str, Any]:
    """Whether the compiled model runs and gives eager's logits within :data:`TOLERANCE` (eval, no grad); the
    largest difference, the first call's seconds (compilation included) and the error if it failed. ``compiled``:
    ``model`` already wrapped by ``torch.compile`` and not yet called (default: wrapped here)."""
    model.eval()
    compiled = compiled if compiled is not None else torch.compile(model, backend=backend)
    try:
        with torch.no_grad():
            expected = model(images)
            started = time.perf_counter()
            got = compiled(images)
            seconds = time.perf_counter() - started
    except Exception as err:  # any compiler failure is a result of this table, not a crash of it
        return {
            "compiles": False,
            "max_abs_diff": float("nan"),
            "first_call_s": float("nan"),
            "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}",
        }
    diff = (got.float() - expected.float()).abs().max().item()
    close = torch.allclose(got.float(), expected.float(), **TOLERANCE)
    return {
        "compiles": close,
        "max_abs_diff": diff,
        "first_call_s": seconds,
        "error": "" if close else "output differs from eager beyond the tolerance",
    }


def arm_models(model: nn.Module, backend: str) -> dict[str, nn.Module]:
    """Three copies of ``model``: eager, compiled with ``backend``, and eager's A/A copy (each trains its own)."""
    return {
        "eager": copy.deepcopy(model),
        "compiled": torch.compile(copy.deepcopy(model), backend=backend),
        bench.control_arm("eager"): copy.deepcopy(model),
    }


def _speed(
    arms: dict[str, Callable[[], Any]], images: int, settings: bench.CompareSettings, device: str, prefix: str
) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame]:
    """(the compiled arm's speed row, the A/A control's, raw times) with columns named ``{prefix}_...``."""
    comparison = bench.compare(arms, "eager", bench.control_arm("eager"), settings, device)
    # Compiling runs the same FLOPs: the ideal is 1.00, and nothing the FLOP count misses is added.
    compiled = bench.speed_row(comparison, "compiled", images, 1.0, bench.NO_OVERHEAD_TARGET)
    control = bench.control_row(comparison, images)
    named = {f"{prefix}_{k}": v for k, v in compiled.items()}
    named |= {f"{prefix}_aa_{k}": control[k] for k in ("speedup", "speedup_low", "speedup_high", "verdict")}
    return named, bench.protocol(comparison), bench.raw_times(comparison, arm_kind=prefix)


def setting_row(
    spec: CompileModel, setting: str, vit: nn.Module, images: torch.Tensor, budget: CompileBudget, device: str = "cpu"
) -> tuple[dict[str, Any], pd.DataFrame]:
    """One row of the table: ``setting`` on ``vit`` compiles or not, its graphs and breaks, and the compiled
    speed-up over eager (inference and training step) with the A/A control; and its raw times."""
    model = wrapped(setting, vit, images)
    row = {"model": spec.name, "setting": setting, **graph_report(model, images)}
    torch._dynamo.reset()
    x = images.to(device)
    forward = arm_models(model, budget.backend)
    for m in forward.values():
        m.to(device).eval()
    # The timed compiled arm is the one checked against eager: its first call compiles once for both.
    row |= compiled_matches(forward["eager"], x, budget.backend, compiled=forward["compiled"])
    with torch.no_grad():
        arms = {name: (lambda m=m, x=x: m(x)) for name, m in forward.items()}
        inference, protocol, inference_raw = _speed(arms, len(x), budget.timing, device, "inference")
    steps = {
        name: random_batch_step(m, spec.training_batch, spec.input_size, vit.num_classes, device)
        for name, m in arm_models(model, budget.backend).items()
    }
    training, _, training_raw = _speed(steps, spec.training_batch, budget.timing, device, "training")
    row |= {
        **inference,
        **training,
        "backend": budget.backend,
        "inference_batch": spec.inference_batch,
        "training_batch": spec.training_batch,
        **protocol,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    raw = pd.concat([inference_raw, training_raw], ignore_index=True).assign(model=spec.name, setting=setting)
    return row, raw


def row_folder(spec: CompileModel, setting: str, budget: CompileBudget) -> Path:
    """Where one finished row is kept, so an interrupted measurement resumes at the row it was on: named by the
    model, the setting and a fingerprint of everything that shapes the row (input, batches, backend, timing,
    torch version)."""
    key = [dataclasses.asdict(spec), setting, budget.backend, dataclasses.asdict(budget.timing), torch.__version__]
    digest = fingerprint(key, length=10, algorithm="sha1")
    return cache_dir() / "compile" / f"{spec.name}-{setting.replace(' ', '_')}-{digest}"


def compile_rows(spec: CompileModel, budget: CompileBudget, device: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per setting of ``spec.settings`` (else ``budget.settings``) on ``spec``'s model
    (:func:`setting_row`), and the raw times. Each finished row is kept (:func:`row_folder`); a row already kept is
    read back, not measured again."""
    torch.manual_seed(0)
    vit = create_model(spec.name, **dict(spec.model_kwargs))
    images = torch.randn(spec.inference_batch, *spec.input_size, generator=torch.Generator().manual_seed(0))
    rows, raws = [], []
    for setting in spec.settings or budget.settings:
        folder = row_folder(spec, setting, budget)
        if not (folder / ROW_FILE).is_file():
            row, raw = setting_row(spec, setting, vit, images, budget, device)
            folder.mkdir(parents=True, exist_ok=True)
            for frame, name in ((raw, "raw.csv"), (pd.DataFrame([row]), ROW_FILE)):  # the row last: it marks done
                with atomic_path(folder / name) as tmp:
                    frame.to_csv(tmp, index=False)
        # Read back even when just measured, so a resumed table and a fresh one are the same frame.
        rows.append(pd.read_csv(folder / ROW_FILE))
        raws.append(pd.read_csv(folder / "raw.csv"))
    return pd.concat(rows, ignore_index=True), pd.concat(raws, ignore_index=True)


def compile_table(budget: CompileBudget, device: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`compile_rows` for every model of the budget: (the table, the raw times)."""
    parts = [compile_rows(spec, budget, device) for spec in budget.models]
    return pd.concat([t for t, _ in parts], ignore_index=True), pd.concat([r for _, r in parts], ignore_index=True)


def measure(scale: str = "quick", out: str | None = None) -> pd.DataFrame:
    """Make the compile table at ``scale`` and write ``19_compile`` (table and raw times) to ``out`` (figures/)."""
    table, raw = compile_table(budget(scale), bench.default_device())
    folder = out or project_root() / "figures"
    report.save_table(table, TABLE, out=folder, floatfmt=".3f")
    report.save_raw(raw, TABLE, out=folder)
    return table
