"""The multi-exit study behind notebooks 01, 02, 03 and 07: record once, evaluate any setting offline, time a few.

The test set goes through the backbone once (``multiexit.record_loader``): features at every exit and after the
last block. Every variant's logits are then one linear layer away, and any threshold, policy or batch size is
evaluated offline by :func:`simulate` (top-1, exit histogram, FLOP-ideal speed-up). Real throughput is measured
with ``vitstudy.bench`` only for the few settings a table needs.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from safetensors.torch import load_file, save_file

from . import bench
from .config import Scale, get_scale
from .data import Splits, build_splits, make_loader
from .files import atomic_path, cache_dir
from .multiexit import (
    DEFAULT_EXITS,
    VARIANTS,
    ExitCosts,
    ExitFeatures,
    MultiExitViT,
    check_choice,
    check_threshold,
    confidence,
    exit_costs,
    record_loader,
)
from .plots import new_figure

PAPER_MODEL = "vit_base_patch16_224"  # the report's model, with timm's ImageNet-1k weights
EXIT_SETS: tuple[tuple[int, ...], ...] = ((3,), (6,), (9,), DEFAULT_EXITS)
# Thresholds for sweeps: dense near 1, where a 10-class max-softmax spends most of its mass on a trained model.
SWEEP_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9999, 1.0)
VARIANT_LABELS = {"same": "Same", "finetune": "Fine-Tune", "scratch": "Scratch", "separate": "separate (ours)"}


def exits_label(exits: Sequence[int]) -> str:
    return ",".join(str(b) for b in exits)


# ----------------------------------------------------------------------------------------------------------
# Offline evaluation of a setting


@dataclass
class Simulation:
    """Per image: the prediction, the block it left after (depth = the end) and the column of its exit."""

    predictions: torch.Tensor  # [N]
    exit_block: torch.Tensor  # [N]
    exit_column: torch.Tensor  # [N] index into exits + (final,)


def simulate(
    logits: torch.Tensor,
    exits: Sequence[int],
    depth: int,
    threshold: float,
    policy: str,
    confidence_kind: str = "softmax",
    batch_size: int | None = None,
) -> Simulation:
    """What ``MultiExitViT`` would do, from recorded logits ``[N, exits + 1, C]`` (last column: the end).

    ``sample`` decides per image; ``batch`` per consecutive group of ``batch_size`` images in recorded order
    (the last group may be smaller, as a loader's last batch is).
    """
    check_threshold(threshold)
    check_choice("policy", policy, ("batch", "sample"))
    count, columns = logits.shape[0], logits.shape[1]
    confident = confidence(logits[:, :-1], confidence_kind) >= threshold  # [N, exits]
    if policy == "batch":
        if batch_size is None or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not allowed for policy 'batch': expected an integer >= 1")
        groups = torch.arange(count) // batch_size  # [N] batch of each image
        # A batch leaves at an exit when all its images are confident there: the min over the batch.
        per_batch = torch.ones(int(groups[-1]) + 1, columns - 1, dtype=torch.long)
        per_batch.scatter_reduce_(0, groups[:, None].expand_as(confident), confident.long(), reduce="amin")
        confident = per_batch[groups].bool()
    first = torch.where(confident.any(1), confident.long().argmax(1), torch.full((count,), columns - 1))
    blocks = torch.tensor([*exits, depth])
    predictions = logits[torch.arange(count), first].argmax(-1)
    return Simulation(predictions, blocks[first], first)


def summarize(sim: Simulation, targets: torch.Tensor, exits: Sequence[int], costs: ExitCosts) -> dict[str, float]:
    """Top-1 (%), share of images that left early (%), share per exit (%), FLOP-ideal speed-up."""
    row = {
        "top1": 100 * (sim.predictions == targets).double().mean().item(),
        "exited_pct": 100 * (sim.exit_block < costs.depth).double().mean().item(),
        "ideal_speedup": costs.ideal_speedup(exits, sim.exit_block),
    }
    for block in [*exits, costs.depth]:
        row[f"at_{block}_pct"] = 100 * (sim.exit_block == block).double().mean().item()
    return row


# ----------------------------------------------------------------------------------------------------------
# The study: baseline, recorded features, fitted heads


@dataclass
class ExitStudy:
    """A trained ViT, its splits, recorded features per split, FLOP costs and a fitted model per setting."""

    scale: Scale
    vit: torch.nn.Module
    splits: Splits
    features: dict[str, ExitFeatures]
    costs: ExitCosts
    models: dict[tuple[str, tuple[int, ...]], MultiExitViT] = field(default_factory=dict)
    head_history: pd.DataFrame = field(default_factory=pd.DataFrame)
    plain_top1: float = math.nan

    @property
    def depth(self) -> int:
        return self.costs.depth

    def model(self, variant: str, exits: Sequence[int]) -> MultiExitViT:
        key = (check_choice("variant", variant, VARIANTS), tuple(exits))
        if key not in self.models:
            raise ValueError(
                f"no fitted model for variant {variant!r} with exits {tuple(exits)}: have {list(self.models)}"
            )
        return self.models[key]

    def logits(self, variant: str, exits: Sequence[int], split: str = "test") -> torch.Tensor:
        """``[N, exits + 1, C]`` logits of one setting on a recorded split (cached)."""
        key = (variant, tuple(exits), split)
        if key not in self._logits:
            self._logits[key] = self.model(variant, exits).logits_from_features(self.features[split])
        return self._logits[key]

    def evaluate(
        self,
        variant: str,
        exits: Sequence[int],
        threshold: float,
        policy: str,
        batch_size: int | None = None,
        split: str = "test",
        confidence_kind: str = "softmax",
    ) -> dict[str, Any]:
        """One results row of a setting, offline: top-1, drop vs the plain model, exit shares, ideal speed-up."""
        logits = self.logits(variant, exits, split)
        sim = simulate(logits, exits, self.depth, threshold, policy, confidence_kind, batch_size)
        targets = self.features[split].targets
        variant_final = 100 * (logits[:, -1].argmax(-1) == targets).double().mean().item()
        plain = self.plain_accuracy(split)
        row = {
            "variant": variant,
            "exits": exits_label(exits),
            "policy": policy,
            "threshold": threshold,
            "batch_size": batch_size if policy == "batch" else None,
            **summarize(sim, targets, exits, self.costs),
            "variant_final_top1": variant_final,
            "plain_top1": plain,
        }
        row["top1_drop"] = plain - row["top1"]
        return row

    def plain_accuracy(self, split: str = "test") -> float:
        """Top-1 (%) of the unmodified model: its own head on the recorded final features."""
        with torch.inference_mode():
            logits = self.vit.head(self.features[split].features[:, -1])
        return 100 * (logits.argmax(-1) == self.features[split].targets).double().mean().item()

    @property
    def all_exits(self) -> tuple[int, ...]:
        return self.features["test"].exits

    def __post_init__(self) -> None:
        self._logits: dict[tuple[str, tuple[int, ...], str], torch.Tensor] = {}


def study_model(scale: Scale, progress: bool = True) -> tuple[torch.nn.Module, Splits]:
    """The model and data of a scale: the cached baseline; at ``paper`` scale the pretrained ViT-B on ImageNet.

    ``paper`` follows the report: timm's ``vit_base_patch16_224`` with ImageNet-1k weights, 50k training
    images to fit heads and 10k validation images as the test set.
    """
    if scale.name == "paper":
        from .models import create_model

        vit = create_model(PAPER_MODEL, pretrained=True).eval()
        cfg = dataclasses.replace(
            scale.train, model=PAPER_MODEL, train_size=50_000, val_size=10_000, test_size=10_000, augment=False
        )
        return vit, build_splits(cfg)
    from .train import baseline

    result = baseline(scale, progress=progress)
    return result.model.eval(), result.splits


def _record_path(scale: Scale, split: str, exits: Sequence[int]) -> Path:
    from .train import baseline_run_dir

    model = f"paper-{PAPER_MODEL}" if scale.name == "paper" else baseline_run_dir(scale).name
    return cache_dir() / "multiexit" / f"{model}-{split}-exits{'_'.join(map(str, exits))}.safetensors"


def recorded_features(
    model: MultiExitViT,
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    cache_path: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> ExitFeatures:
    """``record_loader`` over one split, cached at ``cache_path`` when given (a frozen backbone's features
    never change)."""
    if cache_path is not None and cache_path.is_file():
        saved = load_file(str(cache_path))
        return ExitFeatures(saved["features"], saved["targets"], model.exits, model.depth)
    if getattr(dataset, "augment", False):
        # Heads are fitted on the images as the model sees them at test time: no random crop or flip.
        dataset = copy.copy(dataset)
        dataset.augment = False
    loader = make_loader(dataset, batch_size, train=False)
    record = record_loader(model, loader, device, progress)
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            save_file({"features": record.features.contiguous(), "targets": record.targets.contiguous()}, str(tmp))
    return record


def prepare(
    scale: Scale | str | None = None,
    variants: Iterable[str] = VARIANTS,
    exit_sets: Iterable[tuple[int, ...]] = EXIT_SETS,
    head_epochs: int = 30,
    device: str | None = None,
    progress: bool = True,
) -> ExitStudy:
    """The scale's model, train/val/test features at all exits (recorded once, cached), every variant fitted.

    Features are recorded on ``device`` (default: CUDA when present); the study's models then live on the CPU
    and the timing functions move them to the device they time on.
    """
    scale = scale if isinstance(scale, Scale) else get_scale(scale)
    device = device or ("cuda" if bench.device_available("cuda") else "cpu")
    vit, splits = study_model(scale, progress)
    return build_study(scale, vit, splits, variants, exit_sets, head_epochs, device, progress, cache=True)


def build_study(
    scale: Scale,
    vit: torch.nn.Module,
    splits: Splits,
    variants: Iterable[str] = VARIANTS,
    exit_sets: Iterable[tuple[int, ...]] = EXIT_SETS,
    head_epochs: int = 30,
    device: str = "cpu",
    progress: bool = True,
    cache: bool = False,
) -> ExitStudy:
    """Record features of ``vit`` on every split at the union of ``exit_sets``, then fit each variant's heads."""
    exit_sets = [tuple(e) for e in exit_sets]
    all_exits = tuple(sorted({b for e in exit_sets for b in e}))
    recorder = MultiExitViT(vit, all_exits).eval()
    features = {
        split: recorded_features(
            recorder,
            getattr(splits, split),
            scale.eval_batch_size,
            _record_path(scale, split, all_exits) if cache else None,
            device,
            progress,
        )  # fmt: skip
        for split in ("train", "val", "test")
    }
    vit.cpu()  # recorded: from here on, models move to a device only to be timed
    costs = exit_costs(recorder, splits.input_size)
    study = ExitStudy(scale, vit, splits, features, costs)
    histories = []
    for variant in variants:
        for exits in exit_sets:
            model = MultiExitViT(vit, exits, variant).eval()
            history = model.fit_heads(features["train"], epochs=head_epochs, seed=scale.train.seed)
            histories.append(history.assign(variant=variant, exits=exits_label(exits)))
            study.models[(variant, exits)] = model
    study.head_history = pd.concat(histories, ignore_index=True)
    study.plain_top1 = study.plain_accuracy("test")
    return study


# ----------------------------------------------------------------------------------------------------------
# Tables


def timing_settings(scale: Scale, runs: int | None = None) -> bench.TimingSettings:
    return bench.TimingSettings(warmup=scale.bench_warmup, runs=runs or scale.bench_runs)


def measure_interleaved(
    models: Mapping[str, torch.nn.Module],
    inputs: torch.Tensor,
    settings: bench.TimingSettings,
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """Images/s of several models on the same batch, their timed runs interleaved round-robin.

    A plain model and its exit variants are compared under the same load: on a shared machine, timing them one
    after the other lets load drift masquerade as a speed-up. Each call is timed by ``bench.time_callable``
    (sync included); the median over ``settings.runs`` rounds is reported.
    """
    device = torch.device(device)
    if not bench.device_available(device):
        return {name: {"images_per_s": bench.NOT_MEASURED_NO_CUDA, "device": f"{device.type}: not available"}
                for name in models}  # fmt: skip
    x = inputs.to(device)
    for model in models.values():
        model.to(device).eval()
    with torch.inference_mode():
        calls = {name: (lambda m=model: m(x)) for name, model in models.items()}
        seconds = bench.time_interleaved(calls, device, settings)
    env = bench.environment_info(device)
    rows = {}
    for name, values in seconds.items():
        median = float(np.median(values))
        rows[name] = {
            "images_per_s": len(x) / median,
            "images_per_s_iqr": len(x) / np.percentile(values, 25) - len(x) / np.percentile(values, 75),
            "runs": len(values),
            "device": f"{env['device_type']}: {env['device_name']}",
            "cpu_threads": env["cpu_threads"],
            "torch": env["torch"],
            "timm": env["timm"],
        }
    for model in models.values():
        model.to("cpu")
    return rows


def max_speed_table(
    vit: torch.nn.Module,
    input_size: tuple[int, int, int],
    batch_size: int,
    exits: Sequence[int] = DEFAULT_EXITS,
    settings: bench.TimingSettings | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Table 5.1: every image forced out after each exit vs the plain model, on random input.

    Measured speed-up next to the FLOP-ideal one (the FLOP ratio) and their quotient.
    """
    settings = settings or bench.TimingSettings()
    costs = exit_costs(MultiExitViT(vit, exits).eval(), input_size)
    models: dict[str, torch.nn.Module] = {"plain": vit}
    for block in exits:
        models[str(block)] = MultiExitViT(vit, exits, forced_exit=block).eval()
    inputs = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(0))
    speed = measure_interleaved(models, inputs, settings, device)
    rows = [_speed_row("original (all blocks)", costs.depth, speed["plain"], speed["plain"], costs.plain(), costs)]
    for block in exits:
        label = f"forced exit after block {block}"
        rows.append(_speed_row(label, block, speed[str(block)], speed["plain"], costs.forced(block), costs))
    frame = pd.DataFrame(rows)
    frame["batch_size"] = batch_size
    frame["input_size"] = "x".join(map(str, input_size))
    return frame


def _ratio(a, b):
    """a / b, or the not-measured text when either is not a number."""
    if isinstance(a, str) or isinstance(b, str):
        return a if isinstance(a, str) else b
    return a / b


def _speed_row(label, block, row, plain, flops, costs: ExitCosts) -> dict[str, Any]:
    speedup = _ratio(row["images_per_s"], plain["images_per_s"])
    ideal = costs.plain() / flops
    return {
        "setting": label,
        "exit_block": block,
        "images_per_s": row["images_per_s"],
        "speedup": speedup,
        "gflops_per_image": flops / 1e9,
        "ideal_speedup": ideal,
        "measured_over_ideal": _ratio(speedup, ideal),
        "device": row["device"],
    }


def timing_batch(study: ExitStudy, batch_size: int) -> torch.Tensor:
    """The first ``batch_size`` test images as one tensor ``[B, C, H, W]`` (real data for timing)."""
    count = min(batch_size, len(study.splits.test))
    return torch.stack([study.splits.test[i][0] for i in range(count)])


def batch_exits(study: ExitStudy, model: MultiExitViT, batch_size: int) -> dict[str, float]:
    """Share of the timed batch (the first ``batch_size`` test images) that leaves early under ``model``'s
    settings, and the FLOP-ideal speed-up of that batch's exit histogram.

    Computed from the recorded features (``simulate`` reproduces the forward; tested), so no backbone runs here.
    """
    test = study.features["test"]
    head = ExitFeatures(test.features[:batch_size], test.targets[:batch_size], test.exits, test.depth)
    logits = model.logits_from_features(head)
    sim = simulate(logits, model.exits, study.depth, model.threshold, model.policy, model.confidence, batch_size)
    return {
        "batch_exited_pct": 100 * (sim.exit_block < study.depth).double().mean().item(),
        "batch_ideal_speedup": study.costs.ideal_speedup(model.exits, sim.exit_block),
    }


def real_data_table(
    study: ExitStudy,
    threshold: float,
    batch_size: int,
    settings: bench.TimingSettings,
    variants: Sequence[str] = VARIANTS,
    exit_sets: Sequence[tuple[int, ...]] = ((3,), (6,), (9,)),
    policies: Sequence[str] = ("batch", "sample"),
    device: str = "cpu",
) -> pd.DataFrame:
    """Table 5.2: variant x exit x policy at one threshold.

    Top-1 and exit shares come from the whole test set (offline); images/s from one batch of real test images,
    timed interleaved with the plain model on ``device``.
    """
    images = timing_batch(study, batch_size)
    settings_list = [(v, e, p) for v in variants for e in exit_sets for p in policies]
    models: dict[str, torch.nn.Module] = {"plain": study.vit}
    for variant, exits, policy in settings_list:
        # Copies share the backbone: only the knobs differ between the timed models.
        model = copy.copy(study.model(variant, exits))
        model.threshold, model.policy = threshold, policy
        models[f"{variant}/{exits_label(exits)}/{policy}"] = model
    speed = measure_interleaved(models, images, settings, device)
    rows = []
    for (variant, exits, policy), (name, model) in zip(settings_list, list(models.items())[1:]):
        row = study.evaluate(variant, exits, threshold, policy, batch_size)
        rows.append({
            **row,
            "images_per_s": speed[name]["images_per_s"],
            "plain_images_per_s": speed["plain"]["images_per_s"],
            "speedup": _ratio(speed[name]["images_per_s"], speed["plain"]["images_per_s"]),
            **batch_exits(study, model, len(images)),
            "device": speed[name]["device"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def beside_report(table: pd.DataFrame, paper: pd.DataFrame, prefix: str = "report_") -> pd.DataFrame:
    """Add the report's top-1, speed-up and images/s (Table 5.2 or 5.3, long format) beside matching rows.

    Rows match on variant (the report's Same / Fine-Tune / Scratch) and single exit block; ``separate`` and
    multi-exit rows have no counterpart and keep empty report columns. Filter ``paper`` to one device first.
    """
    wide = paper.pivot_table(index=["classifier", "exit_block"], columns="metric", values="value").reset_index()
    wide["variant"] = wide["classifier"].map({label: name for name, label in VARIANT_LABELS.items()})
    wide["exits"] = wide["exit_block"].astype(str)
    names = {"accuracy_pct": "top1", "speed_improvement": "speedup", "inference_speed_im_s": "images_per_s"}
    wide = wide.rename(columns={k: prefix + v for k, v in names.items()})
    keep = ["variant", "exits", *(prefix + v for v in names.values() if prefix + v in wide)]
    return table.merge(wide[keep], on=["variant", "exits"], how="left")


def device_table(
    study: ExitStudy,
    threshold: float,
    batch_size: int,
    settings: bench.TimingSettings,
    variants: Sequence[str] = ("same", "finetune", "separate"),
    policies: Sequence[str] = ("batch", "sample"),
    devices: Sequence[str] = ("cpu", "cuda"),
) -> pd.DataFrame:
    """Table 5.3: the Table 5.2 measurements once per device, side by side (``cpu_*``, ``cuda_*`` columns).

    A device that is not present reads ``bench.NOT_MEASURED_NO_CUDA`` in its cells, never a number.
    """
    keys = ["variant", "exits", "policy", "threshold", "top1", "top1_drop", "exited_pct", "ideal_speedup"]
    merged = None
    for device in devices:
        part = real_data_table(study, threshold, batch_size, settings, variants, policies=policies, device=device)
        part = part[[*keys, "images_per_s", "plain_images_per_s", "speedup", "device"]]
        part = part.rename(
            columns={c: f"{device}_{c}" for c in ("images_per_s", "plain_images_per_s", "speedup", "device")}
        )
        merged = part if merged is None else merged.merge(part, on=keys)
    return merged


def threshold_sweep(
    study: ExitStudy,
    thresholds: Sequence[float] = SWEEP_THRESHOLDS,
    variants: Sequence[str] = VARIANTS,
    exit_sets: Sequence[tuple[int, ...]] = EXIT_SETS,
    policies: Sequence[str] = ("sample",),
    batch_size: int | None = None,
    split: str = "test",
) -> pd.DataFrame:
    """Offline accuracy / exit share / FLOP-ideal speed-up of every (variant, exits, policy, threshold)."""
    rows = [
        study.evaluate(variant, exits, t, policy, batch_size, split)
        for variant in variants
        for exits in exit_sets
        for policy in policies
        for t in thresholds
    ]
    return pd.DataFrame(rows)


def choose_operating_point(
    study: ExitStudy,
    max_drop: float = 0.5,
    thresholds: Sequence[float] = SWEEP_THRESHOLDS,
    variants: Sequence[str] = VARIANTS,
    exit_sets: Sequence[tuple[int, ...]] = EXIT_SETS,
) -> dict[str, Any]:
    """The per-sample setting with the highest FLOP-ideal speed-up whose validation top-1 drops <= ``max_drop``.

    Chosen on the validation split, so the test numbers it is reported with are not tuned on the test set.
    """
    sweep = threshold_sweep(study, thresholds, variants, exit_sets, split="val")
    allowed = sweep[sweep["top1_drop"] <= max_drop]
    if allowed.empty:
        allowed = sweep[sweep["threshold"] == max(thresholds)]
    best = allowed.sort_values(["ideal_speedup", "top1"], ascending=False).iloc[0]
    exits = tuple(int(b) for b in best["exits"].split(","))
    return {"variant": best["variant"], "exits": exits, "threshold": float(best["threshold"])}


def measured_points(
    study: ExitStudy,
    points: Sequence[dict[str, Any]],
    batch_size: int,
    settings: bench.TimingSettings,
    device: str = "cpu",
) -> pd.DataFrame:
    """Measured per-sample speed-up of a few (variant, exits, threshold) points, for the sweep's curves."""
    images = timing_batch(study, batch_size)
    models: dict[str, torch.nn.Module] = {"plain": study.vit}
    for i, point in enumerate(points):
        model = copy.copy(study.model(point["variant"], point["exits"]))
        model.threshold, model.policy = point["threshold"], "sample"
        models[str(i)] = model
    speed = measure_interleaved(models, images, settings, device)
    rows = []
    for i, point in enumerate(points):
        row = study.evaluate(point["variant"], point["exits"], point["threshold"], "sample")
        rows.append({
            **row,
            "speedup": _ratio(speed[str(i)]["images_per_s"], speed["plain"]["images_per_s"]),
            "images_per_s": speed[str(i)]["images_per_s"],
            **batch_exits(study, models[str(i)], len(images)),
        })  # fmt: skip
    return pd.DataFrame(rows)


def performance_table(
    study: ExitStudy,
    point: dict[str, Any],
    batch_size: int,
    settings: bench.TimingSettings,
    device: str = "cpu",
) -> pd.DataFrame:
    """The three speed targets on the baseline: forced exit vs FLOP-ideal, per-sample exit, no-exit overhead."""
    images = timing_batch(study, batch_size)
    per_sample = copy.copy(study.model(point["variant"], point["exits"]))
    per_sample.threshold, per_sample.policy = point["threshold"], "sample"
    idle = MultiExitViT(study.vit, DEFAULT_EXITS, threshold=1.0, policy="sample").eval()
    models: dict[str, torch.nn.Module] = {"plain": study.vit, "per_sample": per_sample, "idle": idle}
    for block in DEFAULT_EXITS:
        models[f"forced_{block}"] = MultiExitViT(study.vit, DEFAULT_EXITS, forced_exit=block).eval()
    speed = measure_interleaved(models, images, settings, device)
    plain = speed["plain"]["images_per_s"]
    rows = []
    for block in DEFAULT_EXITS:
        ideal = study.costs.plain() / study.costs.forced(block)
        label = f"forced exit after block {block}"
        rows.append(
            _target_row(label, speed[f"forced_{block}"]["images_per_s"], plain, ideal, "measured / ideal >= 0.97")
        )
    exits_on_batch = batch_exits(study, per_sample, len(images))
    test = study.evaluate(point["variant"], point["exits"], point["threshold"], "sample")
    label = (
        f"per-sample exit: {point['variant']}, exits {exits_label(point['exits'])}, threshold {point['threshold']:g}"
    )
    row = _target_row(label, speed["per_sample"]["images_per_s"], plain, exits_on_batch["batch_ideal_speedup"],
                      "speed-up >= 2 at drop <= 0.5 points; measured / ideal >= 0.9")  # fmt: skip
    row.update(test_top1=test["top1"], test_top1_drop=test["top1_drop"], test_ideal_speedup=test["ideal_speedup"],
               test_exited_pct=test["exited_pct"], batch_exited_pct=exits_on_batch["batch_exited_pct"])  # fmt: skip
    rows.append(row)
    row = _target_row("exit machinery, nothing exits (exits 3,6,9, threshold 1.0)", speed["idle"]["images_per_s"],
                      plain, 1.0, "overhead <= 3 %")  # fmt: skip
    slowdown = _ratio(plain, speed["idle"]["images_per_s"])
    row["overhead_pct"] = 100 * (slowdown - 1) if not isinstance(slowdown, str) else slowdown
    row["batch_exited_pct"] = batch_exits(study, idle, len(images))["batch_exited_pct"]
    rows.append(row)
    frame = pd.DataFrame(rows)
    frame["batch_size"] = len(images)
    frame["runs"] = speed["plain"].get("runs")
    frame["device"] = speed["plain"]["device"]
    return frame


def _target_row(label: str, speed, plain, ideal: float, target: str) -> dict[str, Any]:
    speedup = _ratio(speed, plain)
    return {
        "measurement": label,
        "images_per_s": speed,
        "plain_images_per_s": plain,
        "speedup": speedup,
        "ideal_speedup": ideal,
        "measured_over_ideal": _ratio(speedup, ideal),
        "target": target,
    }


# ----------------------------------------------------------------------------------------------------------
# Why the report's batch rule never fired


def batch_rule_exit_rates(
    study: ExitStudy,
    variant: str,
    exits: tuple[int, ...],
    thresholds: Sequence[float],
    batch_sizes: Sequence[int],
) -> pd.DataFrame:
    """Share of images leaving early under the ``batch`` rule, by batch size and threshold (measured offline).

    ``per_image_pct`` is the share that would leave on their own (batch size 1); ``independent_pct`` is what
    the batch rule gives if confident images were independent draws: ``per_image ** batch_size``.
    """
    rows = []
    for threshold in thresholds:
        per_image = study.evaluate(variant, exits, threshold, "sample")["exited_pct"] / 100
        for batch_size in batch_sizes:
            row = study.evaluate(variant, exits, threshold, "batch", batch_size)
            rows.append({
                "variant": variant, "exits": exits_label(exits), "threshold": threshold, "batch_size": batch_size,
                "batch_exited_pct": row["exited_pct"], "per_image_pct": 100 * per_image,
                "independent_pct": 100 * per_image**batch_size, "top1": row["top1"],
                "ideal_speedup": row["ideal_speedup"],
            })  # fmt: skip
    return pd.DataFrame(rows)


def required_confident_share(batch_sizes: Sequence[int], batch_exit_rate: float = 0.5) -> pd.DataFrame:
    """Confident share per image needed for a batch of b independent images to leave at rate r: ``r ** (1/b)``."""
    return pd.DataFrame(
        [{"batch_size": b, "batch_exit_rate_pct": 100 * batch_exit_rate,
          "confident_share_needed_pct": 100 * batch_exit_rate ** (1 / b),
          "unconfident_images_allowed_per_1000": 1000 * (1 - batch_exit_rate ** (1 / b))} for b in batch_sizes]
    )  # fmt: skip


def chance_floor_table(classes: Sequence[int] = (10, 1000), threshold: float = 0.01) -> pd.DataFrame:
    """Max-softmax is at least 1/C: where the report's threshold sits relative to chance for C classes."""
    return pd.DataFrame(
        [{"classes": c, "max_softmax_floor": 1 / c, "threshold": threshold, "threshold_over_floor": threshold * c,
          "exit_guaranteed_per_image": threshold <= 1 / c} for c in classes]
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# Plots (data in, Figure out)


def speed_bars(table: pd.DataFrame, reference: pd.DataFrame | None = None) -> Figure:
    """Table 5.1 as bars: measured and FLOP-ideal speed-up per exit block, the report's measured beside them."""
    fig = new_figure((7, 3.4))
    ax = fig.subplots()
    table = table.sort_values("exit_block")
    x = np.arange(len(table))
    series = [("ours, measured", table["speedup"]), ("ours, FLOP-ideal", table["ideal_speedup"])]
    if reference is not None:
        ref = reference[reference["metric"] == "speed_improvement"].set_index("exit_block")["value"].astype(float)
        series.append(("report, measured (RTX A6000)", table["exit_block"].map(ref)))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series):
        values = pd.to_numeric(values, errors="coerce")
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, [f"exit {b}" if b < table["exit_block"].max() else "original" for b in table["exit_block"]])
    ax.set(ylabel="speed-up over the original model (x)", title="every image forced out at one block")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def accuracy_speed_curves(
    sweep: pd.DataFrame, measured: pd.DataFrame | None = None, plain_top1: float | None = None
) -> Figure:
    """Top-1 vs FLOP-ideal speed-up per variant (one panel each), a line per exit set; measured points on top."""
    variants = list(dict.fromkeys(sweep["variant"]))
    fig = new_figure((3.2 * len(variants), 3.4))
    axes = fig.subplots(1, len(variants), sharey=True, squeeze=False)[0]
    for ax, variant in zip(axes, variants):
        part = sweep[sweep["variant"] == variant]
        for exits, curve in part.groupby("exits", sort=False):
            curve = curve.sort_values("ideal_speedup")
            ax.plot(curve["ideal_speedup"], curve["top1"], "-o", ms=3, label=f"exits {exits}")
        if measured is not None:
            points = measured[measured["variant"] == variant]
            ax.scatter(points["speedup"], points["top1"], marker="*", s=90, color="black", zorder=5, label="measured")
        if plain_top1 is not None:
            ax.axhline(plain_top1, color="grey", ls="--", lw=1)
            ax.axhline(plain_top1 - 0.5, color="grey", ls=":", lw=1)
        ax.set(title=VARIANT_LABELS.get(variant, variant), xlabel="speed-up (x; lines: FLOP-ideal)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test top-1 (%)")
    axes[0].legend(fontsize=7)
    return fig


def batch_rule_plot(rates: pd.DataFrame) -> Figure:
    """Exit rate of the ``batch`` rule vs batch size, one line per threshold, with the independence model dashed."""
    fig = new_figure((6, 3.4))
    ax = fig.subplots()
    for threshold, part in rates.groupby("threshold"):
        line = ax.plot(part["batch_size"], part["batch_exited_pct"], "-o", ms=3, label=f"threshold {threshold:g}")
        ax.plot(part["batch_size"], part["independent_pct"], "--", color=line[0].get_color(), lw=1)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="batch size", ylabel="images that exited early (%)",
           title="the report's rule: a batch exits only when its least confident image does")  # fmt: skip
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def device_speedup_bars(table: pd.DataFrame, devices: Sequence[str] = ("cpu", "cuda")) -> Figure:
    """Measured speed-up per setting, one bar per device; a device that was not measured is named, not drawn."""
    fig = new_figure((max(6.0, 0.45 * len(table)), 3.6))
    ax = fig.subplots()
    x = np.arange(len(table))
    width = 0.8 / len(devices)
    missing = []
    for i, device in enumerate(devices):
        values = pd.to_numeric(table[f"{device}_speedup"], errors="coerce")
        if values.isna().all():
            missing.append(device)
            continue
        ax.bar(x + (i - (len(devices) - 1) / 2) * width, values, width, label=device)
    ax.axhline(1.0, color="grey", lw=1)
    labels = [f"{r.variant} {r.exits} {r.policy}" for r in table.itertuples()]
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    title = "speed-up over the plain model on real test images"
    if missing:
        title += f"\n{', '.join(missing)}: {bench.NOT_MEASURED_NO_CUDA}"
    ax.set(ylabel="speed-up (x)", title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


# ----------------------------------------------------------------------------------------------------------
# Explorer (notebook 07): everything a widget shows, computed without a browser


@dataclass
class ExplorerView:
    """What the explorer shows for one setting: the summary row, the simulation and the figure."""

    summary: dict[str, Any]
    simulation: Simulation
    figure: Figure


def explore(
    study: ExitStudy,
    variant: str,
    exits: Sequence[int],
    policy: str,
    threshold: float,
    batch_size: int = 64,
    start: int = 0,
    count: int = 24,
    columns: int = 8,
) -> ExplorerView:
    """Test images labelled with exit block, confidence and right/wrong; exit histogram; top-1 and ideal speed-up."""
    exits = tuple(exits)
    logits = study.logits(variant, exits)
    sim = simulate(logits, exits, study.depth, threshold, policy, batch_size=batch_size)
    targets = study.features["test"].targets
    summary = study.evaluate(variant, exits, threshold, policy, batch_size)
    conf = confidence(logits[torch.arange(len(targets)), sim.exit_column])  # [N] at the exit each image took
    shown = range(start, min(start + count, len(targets)))
    images = torch.stack([study.splits.test[i][0] for i in shown]) if len(shown) else torch.zeros(0, 1, 8, 8)
    right = [bool(sim.predictions[i] == targets[i]) for i in shown]
    titles = [
        f"exit {int(sim.exit_block[i])} · {conf[i]:.2f}\n{'right' if ok else 'wrong'}" for i, ok in zip(shown, right)
    ]
    fig = explorer_figure(images, titles, right, summary, [*exits, study.depth], columns)
    return ExplorerView(summary, sim, fig)


def explorer_figure(
    images: torch.Tensor,
    titles: Sequence[str],
    right: Sequence[bool],
    summary: dict[str, Any],
    blocks: Sequence[int],
    columns: int = 8,
) -> Figure:
    """Image grid (wrong ones red) beside a histogram of exit blocks, with top-1 and speed-up in the title."""
    rows = max(1, -(-len(images) // columns))
    fig = new_figure((1.2 * columns + 3.2, max(3.0, 1.4 * rows)))
    grid, side = fig.subfigures(1, 2, width_ratios=[1.2 * columns, 3.2])
    axes = grid.subplots(rows, columns, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < len(images):
            image = images[index].float()
            image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray")
            ax.set_title(titles[index], fontsize=6.5, color="black" if right[index] else "tab:red")
    hist_ax = side.subplots()
    shares = [summary[f"at_{b}_pct"] for b in blocks]
    hist_ax.bar([str(b) if b != blocks[-1] else f"{b}\n(end)" for b in blocks], shares, color="tab:blue")
    hist_ax.set(xlabel="exit block", ylabel="test images (%)", ylim=(0, 100))
    hist_ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{summary['variant']} · exits {summary['exits']} · {summary['policy']} · threshold {summary['threshold']:g}: "
        f"top-1 {summary['top1']:.2f}% (plain {summary['plain_top1']:.2f}%), exited {summary['exited_pct']:.1f}%, "
        f"FLOP-ideal speed-up {summary['ideal_speedup']:.2f}x",
        fontsize=9,
    )
    return fig


def explorer_widget(study: ExitStudy, show: bool = True, batch_size: int = 64, count: int = 24):
    """The explorer as a ``checked_interactive`` widget: threshold slider, variant / exits / policy selectors."""
    import ipywidgets as widgets

    from .widgets import checked_interactive

    variants = list(dict.fromkeys(v for v, _ in study.models))
    exit_sets = list(dict.fromkeys(exits_label(e) for _, e in study.models))

    def view(variant: str, exits: str, policy: str, threshold: float, start: int) -> ExplorerView:
        chosen = tuple(int(b) for b in exits.split(","))
        return explore(study, variant, chosen, policy, threshold, batch_size, start, count)

    def show_view(**kwargs: Any) -> ExplorerView:
        import matplotlib.pyplot as plt

        result = view(**kwargs)
        if show:
            from IPython.display import display

            display(result.figure)
        plt.close(result.figure)  # drawn already; pyplot must not keep one figure per slider move
        return result

    test_size = len(study.features["test"].targets)
    return checked_interactive(
        show_view,
        show=show,
        variant=widgets.Dropdown(options=variants, value="separate" if "separate" in variants else variants[0]),
        exits=widgets.Dropdown(options=exit_sets, value=exit_sets[-1], description="exits after"),
        policy=widgets.ToggleButtons(options=["sample", "batch"], value="sample"),
        threshold=widgets.FloatSlider(value=0.9, min=0.0, max=1.0, step=0.005, readout_format=".3f"),
        start=widgets.IntSlider(0, 0, max(0, test_size - count), count, description="first image"),
    )
