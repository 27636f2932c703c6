"""Notebook 10: the batch-1 latency protocol (fake clock), the exit histogram, the batch sweep, both methods at once
and the table beside the field."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from vitstudy import bench, multiexit, skipvit
from vitstudy.config import Scale, TrainConfig
from vitstudy.data import build_splits
from vitstudy.experiments.multiexit import edge_latency, edge_latency_compose, edge_latency_field
from vitstudy.experiments.multiexit.edge_latency_protocol import (
    latency_rows,
    paired_ratio_interval,
    time_models_per_image,
    time_per_image,
)
from vitstudy.experiments.multiexit.max_speed_exit import CONTROL_LABEL
from vitstudy.experiments.multiexit.real_data_exit import timing_batch
from vitstudy.experiments.multiexit.study import build_study
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


@pytest.fixture(scope="module")
def study():
    """An untrained depth-12 ViT on a few digits, exits 3, 6, 9 and 3 fitted (`separate`)."""
    cfg = TrainConfig(
        model="vitstudy_tiny_patch4_28",
        model_kwargs=dict(img_size=8, patch_size=2),
        dataset="digits",
        train_size=128,
        val_size=64,
        test_size=64,
        augment=False,
    )
    torch.manual_seed(0)
    vit = create_model(cfg.model, **cfg.model_kwargs).eval()
    return build_study(
        Scale("test", cfg, eval_batch_size=64),
        vit,
        build_splits(cfg),
        ["separate"],
        [(3, 6, 9), (3,)],
        head_epochs=1,
        progress=False,
    )


def mixed_point(study) -> dict:
    """The `separate` 3,6,9 point at the median exit-3 confidence of the test set: some images leave early."""
    conf = multiexit.confidence(study.logits("separate", (3, 6, 9))[:, 0])
    return {"variant": "separate", "exits": (3, 6, 9), "threshold": conf.median().item()}


# ----------------------------------------------------------------------------------------------------------
# The protocol, on a fake clock


def test_arms_alternate_abba_image_by_image():
    """After the warm-up, image 0 runs A B C, image 1 C B A, image 2 A B C, ..."""
    clock, log = FakeClock(), []
    arms = fake_arms(clock, {"a": lambda i: 1.0, "b": lambda i: 1.0, "c": lambda i: 1.0}, log)
    time_per_image(arms, numbered_images(4), "a", "c", warmup_images=0, timer=clock)
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

    run = time_per_image(
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
    run = time_per_image(fake_arms(clock, costs, log), numbered_images(101), "plain", "copy", 3, timer=clock)
    table = latency_rows(run, {"fast": 2.0}, {"fast": (0.9, 1.03)}, resamples=200).set_index("arm")
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
    run = time_per_image(fake_arms(clock, costs, log), numbered_images(4), "plain", "copy", 0, timer=clock)
    run.environment["peak_fp32_gflop_per_s"] = 200.0  # a test clock measures no peak
    run = dataclasses.replace(run, work=bench.BaselineWork(1e9))
    table = latency_rows(run, {}, {}, resamples=50)
    assert table["baseline_gflop_per_s"].tolist() == pytest.approx([100] * 3)
    assert table["baseline_fraction_of_peak"].tolist() == pytest.approx([0.5] * 3)
    assert (table["peak_dtype"] == "fp32").all() and (table["flops_counted"] == "forward").all()


def test_aa_control_row_present_and_judged():
    """The A/A copy gets its own row with the control verdict; the baseline reads "baseline"."""
    clock, log = FakeClock(), []
    costs = {"plain": lambda i: 0.002, "exit": lambda i: 0.001, "plain (A/A copy)": lambda i: 0.002}
    run = time_per_image(fake_arms(clock, costs, log), numbered_images(6), "plain", "plain (A/A copy)", 1, timer=clock)
    table = latency_rows(run, {}, {}, resamples=200).set_index("arm")
    assert table.loc["plain (A/A copy)", "verdict"] == "A/A control: within 1.00 ± 3%"
    assert table.loc["plain", "verdict"] == "baseline"
    assert (table["note"] == "").all()


def test_interval_is_paired_by_image():
    """Times that vary 100-fold over images, the arm always at half: the paired interval of the ratio of means is
    exactly 2; unpaired resampling would spread it wide."""
    base = np.random.default_rng(0).lognormal(0, 1.5, 200)
    ratio, low, high = paired_ratio_interval(base, base / 2, np.mean, resamples=500)
    assert (ratio, low, high) == pytest.approx((2, 2, 2))
    unpaired = np.random.default_rng(1).permutation(base) / 2  # the same times, each beside another image's
    ratio_u, low_u, high_u = paired_ratio_interval(base, unpaired, np.mean, resamples=500)
    assert ratio_u == pytest.approx(2) and high_u - low_u > 0.5


def test_without_the_device_nothing_is_timed(no_cuda):
    """On an absent CUDA device every number is NaN and the note says why."""
    clock, log = FakeClock(), []
    arms = fake_arms(clock, {"plain": lambda i: 1.0, "copy": lambda i: 1.0}, log)
    run = time_per_image(arms, numbered_images(3), "plain", "copy", device="cuda", timer=clock)
    table = latency_rows(run, {}, {})
    assert not log and table["speedup"].isna().all()
    assert (table["verdict"] == "not measured").all() and (table["note"] == bench.NOT_MEASURED_NO_CUDA).all()


def test_time_models_per_image_adds_the_aa_copy(study):
    """Models are timed with a deep copy of the baseline as the A/A arm, and go back to the CPU."""
    ticks = iter(np.arange(0, 1e6, 1e-3))
    images = timing_batch(study, 4)
    run = time_models_per_image({"plain": study.vit}, images, 1, timer=lambda: next(ticks))
    assert run.arms == ("plain", "plain (A/A copy)")
    assert run.raw["seconds"].to_numpy() == pytest.approx(1e-3)
    # the baseline's FLOPs per image, for its achieved GFLOP/s in every row
    assert run.work.flops_per_image == pytest.approx(bench.flops_per_image(study.vit, tuple(images.shape[1:])))


# ----------------------------------------------------------------------------------------------------------
# The tables


def test_exit_histogram_sums_to_the_image_count():
    """One row per exit and the end; images add up to the count, shares to 100%."""
    histogram = edge_latency.exit_histogram((3, 6, 9), 12, torch.tensor([3, 3, 12, 9, 12, 12, 6]))
    assert histogram["exit_block"].tolist() == [3, 6, 9, 12]
    assert histogram["images"].tolist() == [2, 1, 1, 3]
    assert histogram["share_pct"].sum() == pytest.approx(100)


def test_batch1_latency_table(study):
    """Plain, the exit, the never-firing exit and the A/A control, on a fake clock; the exit's FLOP ideal is its
    histogram's on the timed images; the never-firing exit lets no image out and carries its overhead."""
    point = mixed_point(study)
    spend = edge_latency.budget("smoke")
    ticks = iter(np.arange(0, 1e6, 1e-3))
    table, histogram, run = edge_latency.batch1_latency(study, point, spend, timer=lambda: next(ticks))
    assert table["arm"].tolist() == ["plain", edge_latency.EXIT_ARM, edge_latency.IDLE_ARM, CONTROL_LABEL]
    assert histogram["images"].sum() == spend.latency_images == run.raw["image"].nunique()
    exit_block = torch.tensor(np.repeat(histogram["exit_block"], histogram["images"]).to_numpy())
    row = table.set_index("arm").loc[edge_latency.EXIT_ARM]
    assert row["ideal_speedup"] == pytest.approx(study.costs.ideal_speedup(point["exits"], exit_block))
    assert row["exited_pct"] == pytest.approx(histogram["share_pct"][:-1].sum())
    idle = table.set_index("arm").loc[edge_latency.IDLE_ARM]
    assert idle["exited_pct"] == 0 and idle["overhead_pct"] == pytest.approx(0)


def test_batch_sweep_has_an_aa_control_per_batch(study):
    """Every batch size gets plain, the exit and its own A/A control, the exit judged against its batch's ideal."""
    sweep, raw = edge_latency.batch_sweep(study, mixed_point(study), (1, 4), bench.SMOKE_TIMING)
    assert sweep.groupby("batch_size")["arm"].apply(list).to_dict() == {
        b: ["plain", edge_latency.EXIT_ARM, CONTROL_LABEL] for b in (1, 4)
    }
    assert set(raw["batch_size"]) == {1, 4} and sweep["speedup"].notna().all()


def test_vit_b_batch1_is_table_5_1_at_batch_one(tiny_vit):
    """Full model, a forced exit and the A/A control at batch 1, with the latency in ms."""
    table, _ = edge_latency.vit_b_batch1(tiny_vit, (1, 28, 28), (3,), bench.SMOKE_TIMING)
    assert table["batch_size"].eq(1).all()
    assert table["latency_ms"].to_numpy() == pytest.approx(1e3 * table["seconds_per_call"].to_numpy())
    assert CONTROL_LABEL in set(table["setting"])


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return create_model("vitstudy_tiny_patch4_28").eval()


def test_findings_read_not_measured_on_empty_tables():
    """No table, no error: the closing paragraph still reads."""
    empty = pd.DataFrame(columns=["arm", "setting"])
    text = edge_latency.findings(empty, empty, empty, empty, {})
    assert text.startswith("Does an early exit save time") and "not measured" in text


def test_budgets_are_checked():
    """Smoke and quick budgets exist; a bad preset or batch size is one line naming it."""
    assert edge_latency.budget("smoke").latency_images < edge_latency.budget("quick").latency_images
    with pytest.raises(ValueError, match="no_such_row"):
        edge_latency.EdgeLatencyBudget(
            "x", 1, 0, bench.SMOKE_TIMING, bench.SMOKE_TIMING, bench.SMOKE_TIMING, skipvit_preset="no_such_row"
        )
    with pytest.raises(ValueError, match="sweep_batches"):
        edge_latency.EdgeLatencyBudget(
            "x", 1, 0, bench.SMOKE_TIMING, bench.SMOKE_TIMING, bench.SMOKE_TIMING, sweep_batches=(0,)
        )


# ----------------------------------------------------------------------------------------------------------
# Both methods at once


def test_multi_exit_vit_alone_ignores_skipvit_dropping(tiny_vit):
    """Why SkipExitViT exists: MultiExitViT runs the blocks itself, so a patched backbone's dropping never runs."""
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    patched = skipvit.apply_skipvit(copy.deepcopy(tiny_vit), skipvit.HEADLINE)
    with torch.inference_mode():
        wrapped = multiexit.MultiExitViT(patched, (3,), threshold=1.0).eval()(x).logits
        assert torch.equal(wrapped, tiny_vit(x))
        assert not torch.allclose(wrapped, patched(x))


def test_skip_exit_vit_matches_skipvit_when_no_image_exits(tiny_vit):
    """With exits before the drop region and none firing, the composed model's logits are the SkipViT model's own."""
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    exit_model = multiexit.MultiExitViT(copy.deepcopy(tiny_vit), (3,), threshold=1.0).eval()
    both = edge_latency_compose.with_skipvit(exit_model, skipvit.HEADLINE)
    with torch.inference_mode():
        out = both(x)
        assert (out.exit_block == 12).all()
        torch.testing.assert_close(out.logits, both.vit(x))
    assert not isinstance(exit_model.vit, skipvit.SkipViTMixin)  # the original is left as it was


def test_exits_inside_the_drop_region_are_refused(tiny_vit):
    """Exits 6 and 9 cut the headline's region (blocks 6-11): compatible_exits keeps 3; a cut is one clear line."""
    headline = skipvit.preset(skipvit.HEADLINE)
    assert edge_latency_compose.compatible_exits((3, 6, 9), headline) == (3,)
    assert edge_latency_compose.compatible_exits((3, 11), headline) == (3, 11)
    with pytest.raises(ValueError, match="exits"):
        edge_latency_compose.with_skipvit(multiexit.MultiExitViT(tiny_vit, (3, 6, 9)), headline)
    with pytest.raises(ValueError, match="cuts SkipViT's drop region"):
        edge_latency_compose.segment_settings(headline, 3, 9)
    assert edge_latency_compose.segment_settings(headline, 3, 12) == dataclasses.replace(
        headline, drop_layers=(3,), skip_layer=8
    )
    assert edge_latency_compose.segment_settings(headline, 0, 3) is None


def test_composed_ideal_counts_each_image(study):
    """An image at the end pays the plain model over SkipViT's ideal plus its exit heads; one leaving at an exit
    before the drop region pays what it pays without SkipViT."""
    costs = study.costs
    at_end = edge_latency_compose.composed_ideal(costs, (3,), torch.tensor([12, 12]), 1.25)
    assert at_end == pytest.approx(costs.plain() / (costs.plain() / 1.25 + costs.exit_head))
    at_exit = edge_latency_compose.composed_ideal(costs, (3,), torch.tensor([3]), 1.25)
    assert at_exit == pytest.approx(costs.ideal_speedup((3,), torch.tensor([3])))


def test_composition_row_sets_measured_beside_the_product_of_ideals(study):
    """Exit, SkipViT, both and the A/A control; `product_of_ideals` is the exit's ideal times SkipViT's."""
    point = {**mixed_point(study), "exits": (3, 6, 9)}
    table, _ = edge_latency_compose.composition_table(study, point, skipvit.HEADLINE, 16, bench.SMOKE_TIMING)
    rows = table.set_index("arm")
    exit_arm, skip_arm, both_arm = (
        edge_latency_compose.EXIT_ARM,
        edge_latency_compose.SKIP_ARM,
        edge_latency_compose.BOTH_ARM,
    )
    assert list(rows.index) == [exit_arm, skip_arm, both_arm, CONTROL_LABEL]
    product = rows.loc[exit_arm, "ideal_speedup"] * rows.loc[skip_arm, "ideal_speedup"]
    assert rows.loc[both_arm, "product_of_ideals"] == pytest.approx(product)
    assert rows.loc[both_arm, "measured_over_product"] == pytest.approx(rows.loc[both_arm, "speedup"] / product)
    assert rows.loc[skip_arm, "ideal_speedup"] > 1 and "exits 3," in rows.loc[both_arm, "setting"]


# ----------------------------------------------------------------------------------------------------------
# Beside the field


def test_field_transcription_says_what_each_number_measures():
    """LGViT (counted), A-ViT and CF-ViT (timed), each with model, data set and what it measures."""
    field = edge_latency_field.load_field().set_index("document")
    assert field.loc["lgvit_paper", "speedup"] == 1.8 and not field.loc["lgvit_paper", "timed"]
    assert field.loc["avit_paper", ["speedup", "top1_change_points"]].tolist() == [1.38, -0.3]
    assert field.loc["avit_paper", "model"] == "DeiT-S" and field.loc["cfvit_paper", "timed"]
    assert field[["model", "dataset", "measures"]].notna().all().all()


def test_field_table_never_mixes_published_and_ours():
    """Published rows fill only published_* columns, ours only ours_* columns."""
    row = {
        "speedup": 1.5,
        "speedup_low": 1.4,
        "speedup_high": 1.6,
        "ideal_speedup": 1.9,
        "batch_size": 1,
        "device": "cpu: x",
        "note": "",
    }
    ours = [edge_latency_field.our_row("ours", "timed", row, (0.2, -0.1, 0.5), "tiny", "fashion_mnist")]
    table = edge_latency_field.beside_field(edge_latency_field.load_field(), ours)
    published = table["block"] == edge_latency_field.PUBLISHED
    assert published.sum() == 3 and (~published).sum() == 1
    assert table.loc[published, list(edge_latency_field.OURS_COLUMNS)].isna().all().all()
    assert table.loc[~published, list(edge_latency_field.PUBLISHED_COLUMNS)].isna().all().all()
    assert table.loc[~published, "ours_top1_change_points"].item() == pytest.approx(-0.2)
