"""bench.latency, the per-image timer (on a fake clock): the arms alternate image by image, warm-up calls are
discarded, mean / median / percentiles and speed-ups paired by image, the A/A row, the absent device."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from vitstudy import bench
from vitstudy.models import create_model


class FakeClock:
    """A clock that only moves when an arm says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_arms(clock: FakeClock, costs: dict[str, callable], log: list) -> dict[str, callable]:
    """Arms that log (arm, image value) and advance the clock by ``costs[arm](image value)`` seconds."""

    def arm(name):
        def call(x):
            value = int(x.flatten()[0])
            log.append((name, value))
            clock.now += costs[name](value)

        return call

    return {name: arm(name) for name in costs}


def numbered_images(count: int) -> torch.Tensor:
    """``[count, 1, 2, 2]`` images whose pixels hold their own index."""
    return torch.arange(count, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()


def test_arms_alternate_abba_image_by_image():
    """After the warm-up, image 0 runs A B C, image 1 C B A, image 2 A B C, ..."""
    clock, log = FakeClock(), []
    arms = fake_arms(clock, {"a": lambda i: 1.0, "b": lambda i: 1.0, "c": lambda i: 1.0}, log)
    bench.time_per_image(arms, numbered_images(4), "a", "c", warmup_images=0, timer=clock)
    assert log == [
        ("a", 0),
        ("b", 0),
        ("c", 0),
        ("c", 1),
        ("b", 1),
        ("a", 1),
        ("a", 2),
        ("b", 2),
        ("c", 2),
        ("c", 3),
        ("b", 3),
        ("a", 3),
    ]


def test_warmup_calls_run_but_are_discarded():
    """Each arm runs the first `warmup_images` images untimed first; only one timed row per (image, arm) is kept,
    and none of the warm-up calls' times."""
    clock, log, calls = FakeClock(), [], {"a": 0, "b": 0}

    def cost(name):
        def seconds(_value):
            calls[name] += 1
            return 100.0 if calls[name] <= 2 else 0.001  # the first two calls of each arm are the warm-up

        return seconds

    run = bench.time_per_image(
        fake_arms(clock, {"a": cost("a"), "b": cost("b")}, log),
        numbered_images(5),
        "a",
        "b",
        warmup_images=2,
        timer=clock,
    )
    assert calls == {"a": 7, "b": 7}
    assert [v for _, v in log[:4]] == [0, 0, 1, 1]
    assert run.raw.groupby("arm").size().to_dict() == {"a": 5, "b": 5}
    assert run.raw["seconds"].max() == pytest.approx(0.001)
    assert run.warmup_images == 2


def test_percentiles_means_and_ratios_on_known_times():
    """101 images of 0..100 ms: mean and median 50, p90 90, p99 99; an arm at half the time reads 2.00 on both the
    mean and the median, and its interval is exactly 2 (paired by image)."""
    clock, log = FakeClock(), []
    costs = {"plain": lambda i: i / 1e3, "fast": lambda i: i / 2e3, "copy": lambda i: i / 1e3}
    run = bench.time_per_image(fake_arms(clock, costs, log), numbered_images(101), "plain", "copy", 3, timer=clock)
    table = bench.latency_rows(run, {"fast": 2.0}, {"fast": (0.9, 1.03)}, resamples=200).set_index("arm")
    assert table.loc["plain", ["mean_ms", "median_ms", "p90_ms", "p99_ms"]].tolist() == pytest.approx([50, 50, 90, 99])
    assert table.loc["fast", ["mean_ms", "p99_ms"]].tolist() == pytest.approx([25, 49.5])
    fast = table.loc["fast"]
    assert [fast["speedup"], fast["speedup_low"], fast["speedup_high"]] == pytest.approx([2, 2, 2])
    assert fast["speedup_of_medians"] == pytest.approx(2)
    assert fast["measured_over_ideal"] == pytest.approx(1)
    assert fast["verdict"] == "within target (0.9–1.03)"


def test_every_row_says_how_close_the_baseline_runs_to_the_peak():
    """A baseline doing 1 GFLOP per image in 10 ms on a 200 GFLOP/s machine runs at 100 GFLOP/s, half the peak."""
    clock, log = FakeClock(), []
    costs = {"plain": lambda i: 0.01, "fast": lambda i: 0.005, "copy": lambda i: 0.01}
    run = bench.time_per_image(fake_arms(clock, costs, log), numbered_images(4), "plain", "copy", 0, timer=clock)
    run.environment["peak_fp32_gflop_per_s"] = 200.0  # a test clock measures no peak
    run = dataclasses.replace(run, work=bench.BaselineWork(1e9))
    table = bench.latency_rows(run, {}, {}, resamples=50)
    assert table["baseline_gflop_per_s"].tolist() == pytest.approx([100] * 3)
    assert table["baseline_fraction_of_peak"].tolist() == pytest.approx([0.5] * 3)
    assert (table["peak_dtype"] == "fp32").all() and (table["flops_counted"] == "forward").all()


def test_aa_control_row_present_and_judged():
    """The A/A copy gets its own row with the control verdict; the baseline reads "baseline"."""
    clock, log = FakeClock(), []
    costs = {"plain": lambda i: 0.002, "exit": lambda i: 0.001, "plain (A/A copy)": lambda i: 0.002}
    run = bench.time_per_image(
        fake_arms(clock, costs, log), numbered_images(6), "plain", "plain (A/A copy)", 1, timer=clock
    )
    table = bench.latency_rows(run, {}, {}, resamples=200).set_index("arm")
    assert table.loc["plain (A/A copy)", "verdict"] == "A/A control: within 1.00 ± 3%"
    assert table.loc["plain", "verdict"] == "baseline"
    assert (table["note"] == "").all()


def test_interval_is_paired_by_image():
    """Times that vary 100-fold over images, the arm always at half: the paired interval of the ratio of means is
    exactly 2; unpaired resampling would spread it wide."""
    base = np.random.default_rng(0).lognormal(0, 1.5, 200)
    ratio, low, high = bench.paired_ratio_interval(base, base / 2, np.mean, resamples=500)
    assert (ratio, low, high) == pytest.approx((2, 2, 2))
    unpaired = np.random.default_rng(1).permutation(base) / 2  # the same times, each beside another image's
    ratio_u, low_u, high_u = bench.paired_ratio_interval(base, unpaired, np.mean, resamples=500)
    assert ratio_u == pytest.approx(2) and high_u - low_u > 0.5


def test_without_the_device_nothing_is_timed(no_cuda):
    """On an absent CUDA device every number is NaN and the note says why."""
    clock, log = FakeClock(), []
    arms = fake_arms(clock, {"plain": lambda i: 1.0, "copy": lambda i: 1.0}, log)
    run = bench.time_per_image(arms, numbered_images(3), "plain", "copy", device="cuda", timer=clock)
    table = bench.latency_rows(run, {}, {})
    assert not log and table["speedup"].isna().all()
    assert (table["verdict"] == "not measured").all() and (table["note"] == bench.NOT_MEASURED_NO_CUDA).all()


def test_time_models_per_image_adds_the_aa_copy():
    """Models are timed with a deep copy of the baseline as the A/A arm, and go back to the CPU."""
    torch.manual_seed(0)
    vit = create_model("vitstudy_tiny_patch4_28", img_size=8, patch_size=2, depth=2).eval()
    ticks = (tick * 1e-3 for tick in itertools.count())  # a clock that moves 1 ms per reading, for ever
    images = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    run = bench.time_models_per_image({"plain": vit}, images, 1, timer=lambda: next(ticks))
    assert run.arms == ("plain", "plain (A/A copy)")
    assert run.raw["seconds"].to_numpy() == pytest.approx(1e-3)
    # the baseline's FLOPs per image, for its achieved GFLOP/s in every row
    assert run.work.flops_per_image == pytest.approx(bench.flops_per_image(vit, tuple(images.shape[1:])))


def test_raw_latencies_carry_the_protocol_and_labels():
    """The raw per-image times keep one row per timed call, with how they were timed and the caller's labels."""
    clock, log = FakeClock(), []
    arms = fake_arms(clock, {"plain": lambda i: 0.002, "copy": lambda i: 0.002}, log)
    run = bench.time_per_image(arms, numbered_images(3), "plain", "copy", 0, timer=clock)
    raw = bench.raw_latencies(run, batch_size=1)
    assert len(raw) == 6 and (raw["batch_size"] == 1).all()
    assert (raw["order"] == "abba by image").all() and (raw["timed_images"] == 3).all()
