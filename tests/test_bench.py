"""Tests for vitstudy.bench: timing protocol, result rows, the no-CUDA path and FLOP counts."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import timm
import torch
from torch import nn

from vitstudy import bench
from vitstudy.bench import (
    NOT_MEASURED_NO_CUDA,
    TimingSettings,
    batch_size_sweep,
    device_available,
    environment_info,
    flops_per_image,
    format_measurement,
    measure_inference,
    measure_train_step,
    time_callable,
)

FAST = TimingSettings(warmup=1, runs=2)
INPUT_SIZE = (3, 32, 32)
NUM_CLASSES = 10


def tiny_vit() -> nn.Module:
    """Two-block ViT-Tiny on 32x32 images: 16 patches + CLS = 17 tokens of width 192."""
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=NUM_CLASSES)


class Recorder(nn.Module):
    """Linear classifier that records the input, mode and grad state of every forward call."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, NUM_CLASSES)
        self.calls: list[dict] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append({"x": x, "training": self.training, "inference": torch.is_inference_mode_enabled()})
        return self.fc(x.flatten(1))


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make CUDA look absent, so the no-device path is tested on GPU machines too."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def fake_clock(monkeypatch: pytest.MonkeyPatch, durations: list[float]) -> None:
    """Replace bench's clock so consecutive timed runs take `durations` seconds, cycling."""
    ticks = itertools.count()
    cycle = itertools.cycle(durations)
    state = {"now": 0.0}

    def perf_counter() -> float:
        # Calls alternate start/stop: a stop call advances the clock by the next duration.
        if next(ticks) % 2:
            state["now"] += next(cycle)
        return state["now"]

    monkeypatch.setattr(bench.timing, "time", SimpleNamespace(perf_counter=perf_counter))


def test_environment_info_records_imported_versions() -> None:
    """environment_info reports the torch and timm versions that are imported."""
    info = environment_info("cpu")
    assert info["torch"] == torch.__version__
    assert info["timm"] == timm.__version__
    assert info["device_type"] == "cpu"
    assert info["cpu_threads"] == torch.get_num_threads()


def test_environment_info_is_flat() -> None:
    """Every value of environment_info is a scalar, so a row can go straight into a CSV."""
    assert all(isinstance(v, (str, int, float)) for v in environment_info("cpu").values())


def test_environment_info_absent_cuda_has_same_keys(no_cuda: None) -> None:
    """An absent CUDA device gives the same keys with device_name 'not available'."""
    info = environment_info("cuda")
    assert info.keys() == environment_info("cpu").keys()
    assert info["device_name"] == "not available"


def test_device_available_cpu() -> None:
    """The CPU is always available."""
    assert device_available("cpu")


def test_device_available_absent_cuda(no_cuda: None) -> None:
    """CUDA is unavailable when torch reports no CUDA."""
    assert not device_available("cuda")
    assert not device_available(torch.device("cuda", 0))


@pytest.mark.parametrize("kwargs", [{"warmup": -1}, {"runs": 0}, {"min_run_seconds": -0.1}])
def test_timing_settings_rejects_out_of_range(kwargs: dict) -> None:
    """TimingSettings raises ValueError naming the bad field."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TimingSettings(**kwargs)


def test_time_callable_calls_warmup_plus_runs() -> None:
    """time_callable calls fn exactly warmup + runs times and reports runs timed calls."""
    calls = []
    result = time_callable(lambda: calls.append(1), "cpu", TimingSettings(warmup=2, runs=5))
    assert len(calls) == 7
    assert result["runs"] == 5


def test_time_callable_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Median, quartiles, IQR, min and max follow from the per-run durations."""
    fake_clock(monkeypatch, [5.0, 1.0, 4.0, 2.0, 3.0])
    result = time_callable(lambda: None, "cpu", TimingSettings(warmup=0, runs=5))
    assert result == {
        "seconds_median": 3.0,
        "seconds_min": 1.0,
        "seconds_max": 5.0,
        "seconds_p25": 2.0,
        "seconds_p75": 4.0,
        "seconds_iqr": 2.0,
        "runs": 5,
        "note": "",
    }


def test_time_callable_extends_runs_to_min_run_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """With min_run_seconds set, runs continue until the timed total reaches it."""
    fake_clock(monkeypatch, [1.0])
    result = time_callable(lambda: None, "cpu", TimingSettings(warmup=0, runs=2, min_run_seconds=3.5))
    assert result["runs"] == 4


def test_time_callable_absent_cuda_not_measured(no_cuda: None) -> None:
    """On an absent CUDA device fn is never called, every statistic is NaN and the note says why."""
    calls = []
    result = time_callable(lambda: calls.append(1), "cuda", FAST)
    assert calls == []
    assert result.pop("note") == NOT_MEASURED_NO_CUDA
    assert all(math.isnan(v) for v in result.values())


def test_measure_inference_row() -> None:
    """measure_inference returns a flat row with throughput, timing, settings and environment."""
    row = measure_inference(tiny_vit(), 4, INPUT_SIZE, "cpu", FAST)
    assert row["images_per_s"] == pytest.approx(4 / row["seconds_median"])
    assert row["images_per_s_min"] <= row["images_per_s"] <= row["images_per_s_max"]
    assert row["batch_size"] == 4
    assert row["timing_runs"] == FAST.runs
    assert row["torch"] == torch.__version__


def test_measure_inference_eval_and_inference_mode() -> None:
    """The model runs in eval and inference mode, and its training mode is restored afterwards."""
    model = Recorder().train()
    measure_inference(model, 2, INPUT_SIZE, "cpu", FAST)
    assert all(not c["training"] and c["inference"] for c in model.calls)
    assert model.training


def test_measure_inference_uses_given_inputs() -> None:
    """Given inputs are what the model sees; no random batch is drawn."""
    model, x = Recorder(), torch.randn(2, *INPUT_SIZE)
    measure_inference(model, 2, INPUT_SIZE, "cpu", FAST, inputs=x)
    assert all(torch.equal(c["x"], x) for c in model.calls)


def test_measure_inference_rejects_mismatched_inputs() -> None:
    """Inputs whose shape differs from (batch_size, *input_size) raise ValueError."""
    with pytest.raises(ValueError, match="inputs shape"):
        measure_inference(Recorder(), 4, INPUT_SIZE, "cpu", FAST, inputs=torch.randn(2, *INPUT_SIZE))


def test_measure_inference_absent_cuda_not_measured(no_cuda: None) -> None:
    """On an absent CUDA device the row has the CPU row's keys, not-measured speeds, and no model call."""
    model = Recorder()
    row = measure_inference(model, 2, INPUT_SIZE, "cuda", FAST)
    assert row.keys() == measure_inference(Recorder(), 2, INPUT_SIZE, "cpu", FAST).keys()
    assert math.isnan(row["images_per_s"]) and math.isnan(row["seconds_median"])
    assert row["note"] == NOT_MEASURED_NO_CUDA
    assert model.calls == []


def test_measure_train_step_trains_the_model() -> None:
    """measure_train_step reports training throughput and updates the given model's weights."""
    model = tiny_vit()
    before = model.head.weight.detach().clone()
    row = measure_train_step(model, 4, INPUT_SIZE, NUM_CLASSES, "cpu", FAST)
    assert row["images_per_s"] == pytest.approx(4 / row["seconds_median"])
    assert row["mode"] == "train"
    assert not torch.equal(model.head.weight, before)


def test_measure_train_step_uses_optimizer_factory() -> None:
    """A given optimizer factory builds the optimizer that steps once per call."""
    steps = []

    def factory(params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
        optimizer = torch.optim.SGD(params, lr=0.1)
        optimizer.register_step_post_hook(lambda *_: steps.append(1))
        return optimizer

    measure_train_step(Recorder(), 2, INPUT_SIZE, NUM_CLASSES, "cpu", FAST, optimizer_factory=factory)
    assert len(steps) == FAST.warmup + FAST.runs


def test_measure_train_step_absent_cuda_not_measured(no_cuda: None) -> None:
    """On an absent CUDA device training is not run and the speed is the not-measured string."""
    model = Recorder()
    row = measure_train_step(model, 2, INPUT_SIZE, NUM_CLASSES, "cuda", FAST)
    assert row.keys() == measure_train_step(Recorder(), 2, INPUT_SIZE, NUM_CLASSES, "cpu", FAST).keys()
    assert math.isnan(row["images_per_s"]) and row["note"] == NOT_MEASURED_NO_CUDA
    assert model.calls == []


def test_batch_size_sweep_one_row_per_size_in_order() -> None:
    """batch_size_sweep returns measure(b) for each batch size, in the order given."""
    rows = batch_size_sweep(lambda b: {"batch_size": b}, [1, 4, 2])
    assert [r["batch_size"] for r in rows] == [1, 4, 2]


def hand_count_flops(tokens: int, dim: int, depth: int, patch: int, channels: int, classes: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of a ViT forward for one image, mlp_ratio 4, CLS-token head."""
    per_block = 2 * tokens * (4 * dim * dim + 8 * dim * dim)  # qkv (3C²) + proj (C²) + fc1, fc2 (4C² each)
    per_block += 2 * 2 * tokens * tokens * dim  # q @ k^T and attn @ v, summed over heads
    patch_embed = 2 * (tokens - 1) * dim * channels * patch * patch  # conv: one dot product per patch
    head = 2 * dim * classes  # linear head on the CLS token only
    return depth * per_block + patch_embed + head


def test_flops_per_image_matches_hand_count() -> None:
    """FLOPs of the tiny ViT equal the hand-counted matmul FLOPs (fused attention included)."""
    model = tiny_vit()
    assert model.blocks[0].attn.fused_attn  # the path whose counting is in question
    expected = hand_count_flops(tokens=17, dim=192, depth=2, patch=8, channels=3, classes=NUM_CLASSES)
    assert flops_per_image(model, INPUT_SIZE) == expected


def test_flops_per_image_same_without_fused_attention() -> None:
    """Fused and explicit (matmul + softmax) attention count the same FLOPs."""
    fused, explicit = tiny_vit(), tiny_vit()
    for block in explicit.blocks:
        block.attn.fused_attn = False
    assert flops_per_image(fused, INPUT_SIZE) == flops_per_image(explicit, INPUT_SIZE)


def test_flops_per_image_leaves_model_unchanged() -> None:
    """Counting does not change the model's training mode."""
    model = tiny_vit().train()
    flops_per_image(model, INPUT_SIZE)
    assert model.training


def test_flops_per_image_absent_cuda_counts_on_cpu(no_cuda: None) -> None:
    """FLOPs are arithmetic, so an absent CUDA device still gives the CPU count."""
    model = tiny_vit()
    assert flops_per_image(model, INPUT_SIZE, "cuda") == flops_per_image(model, INPUT_SIZE, "cpu")


@pytest.mark.parametrize(("value", "text"), [(123.456, "123.5"), (7, "7.0"), (math.nan, "not measured")])
def test_format_measurement(value: float, text: str) -> None:
    """Numbers get one decimal; NaN (not measured) is written as words."""
    assert format_measurement(value) == text


def test_time_interleaved_alternates_callables():
    """time_interleaved calls each callable once per round, in turn, after the warm-up rounds."""
    calls: list[str] = []
    fns = {name: (lambda n=name: calls.append(n)) for name in ("a", "b")}
    seconds = bench.time_interleaved(fns, "cpu", bench.TimingSettings(warmup=1, runs=2))
    assert calls == ["a", "b"] * 3
    assert {k: len(v) for k, v in seconds.items()} == {"a": 2, "b": 2}
