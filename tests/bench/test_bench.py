"""Tests for vitstudy.bench: the environment row, the no-CUDA path, FLOP counts, one model's throughput timed by
compare_models, the timed training step (vitstudy.steps.random_batch_step) and the bootstrap interval."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import timm
import torch
from torch import nn

from vitstudy.bench import (
    NOT_MEASURED_NO_CUDA,
    CompareSettings,
    compare_models,
    control_arm,
    device_available,
    environment_info,
    flops_per_image,
    format_interval,
    median_interval,
)
from vitstudy.steps import random_batch_step

FAST = CompareSettings(rounds=2, min_run_time=0.001, warmup_calls=1, bootstrap=100, peak_size=64)
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


# ----------------------------------------------------------------------------------------------------------
# One model's throughput: compare_models against its A/A copy


def test_compare_models_adds_the_aa_copy_and_times_every_arm() -> None:
    """The comparison has the given arm and its A/A copy, each with seconds per call and images/s."""
    comparison = compare_models({"plain": tiny_vit()}, torch.randn(4, *INPUT_SIZE), FAST)
    assert set(comparison.raw["arm"]) == {"plain", control_arm("plain")}
    assert comparison.control == control_arm("plain")
    speed = comparison.speedup("plain")
    assert speed["seconds"] > 0 and speed["speedup"] == 1.0


def test_compare_models_runs_eval_and_inference_mode_on_the_given_batch() -> None:
    """Every timed forward sees the given batch in eval and inference mode; the model ends on the CPU."""
    model, x = Recorder().train(), torch.randn(2, *INPUT_SIZE)
    compare_models({"plain": model}, x, FAST)
    assert model.calls and all(not c["training"] and c["inference"] for c in model.calls)
    assert all(torch.equal(c["x"], x) for c in model.calls)
    assert next(model.parameters()).device.type == "cpu"


def test_compare_models_absent_cuda_not_measured(no_cuda: None) -> None:
    """On an absent CUDA device no forward runs, every number is NaN and the note says why."""
    model = Recorder()
    comparison = compare_models({"plain": model}, torch.randn(2, *INPUT_SIZE), FAST, device="cuda")
    assert model.calls == []
    assert comparison.note == NOT_MEASURED_NO_CUDA and math.isnan(comparison.speedup("plain")["seconds"])


# ----------------------------------------------------------------------------------------------------------
# The timed training step: vitstudy.steps.random_batch_step (what every timed training arm runs)


def test_random_batch_step_trains_the_model() -> None:
    """Each call is a training step: the model is in train mode and its weights change."""
    model = tiny_vit().eval()
    before = model.head.weight.detach().clone()
    step = random_batch_step(model, 4, INPUT_SIZE, NUM_CLASSES)
    loss = step()
    assert model.training and loss.ndim == 0 and not torch.equal(model.head.weight, before)


def test_random_batch_step_uses_optimizer_factory() -> None:
    """A given optimizer factory builds the optimizer that steps once per call."""
    steps = []

    def factory(params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
        optimizer = torch.optim.SGD(params, lr=0.1)
        optimizer.register_step_post_hook(lambda *_: steps.append(1))
        return optimizer

    step = random_batch_step(Recorder(), 2, INPUT_SIZE, NUM_CLASSES, optimizer_factory=factory)
    for _ in range(2):
        step()
    assert len(steps) == 2


# ----------------------------------------------------------------------------------------------------------
# The interval of a median: scipy.stats.bootstrap, checked against the percentile bootstrap written out


def hand_bootstrap(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """The percentile bootstrap by hand: medians of resamples drawn with replacement, their 2.5 and 97.5 %."""
    rng = np.random.default_rng(seed)
    medians = np.median(values[rng.integers(0, len(values), (resamples, len(values)))], axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(low), float(high)


@pytest.mark.parametrize("count", [2, 5, 7, 11])
def test_median_interval_equals_the_percentile_bootstrap(count: int) -> None:
    """median_interval gives the median and the same 95% percentile-bootstrap interval as the hand-written one."""
    values = np.random.default_rng(count).normal(1.0, 0.05, count)
    median, low, high = median_interval(values, resamples=2000, seed=0)
    assert median == np.median(values)
    assert (low, high) == pytest.approx(hand_bootstrap(values, 2000, 0), abs=1e-12)
    assert low <= median <= high


def test_median_interval_of_nothing_or_nan_is_nan() -> None:
    """No values, or a NaN among them (a round not measured), give NaN throughout."""
    assert all(math.isnan(v) for v in median_interval(np.array([])))
    assert all(math.isnan(v) for v in median_interval(np.array([1.0, math.nan, 1.1])))


def test_median_interval_of_one_value_is_that_value() -> None:
    """One value: the median and both ends are that value."""
    assert median_interval(np.array([1.25])) == (1.25, 1.25, 1.25)


def test_format_interval_writes_value_interval_and_not_measured() -> None:
    """A value with its 95% interval reads "1.91× (1.83–1.92)"; NaN reads "not measured"."""
    assert format_interval(1.914, 1.826, 1.9249, unit="×") == "1.91× (1.83–1.92)"
    assert format_interval(float("nan"), float("nan"), float("nan")) == "not measured"


def test_format_interval_without_an_interval_writes_the_value() -> None:
    """Without low and high only the value is written, with its unit."""
    assert format_interval(0.25, digits=1, unit=" %") == "0.2 %"
