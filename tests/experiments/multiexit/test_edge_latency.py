"""experiments.multiexit.edge_latency (notebook 10): the batch-1 latency table, the exit histogram, the batch sweep,
both methods at once and the table beside the field. The per-image timer itself is tests/bench/test_latency.py."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from vitstudy import bench, multiexit, skipvit
from vitstudy.bench.operators import operators_per_image
from vitstudy.config import Scale, TrainConfig
from vitstudy.data import build_splits
from vitstudy.experiments.multiexit import edge_latency
from vitstudy.experiments.multiexit.common import CONTROL_LABEL, SMOKE_ONE_CALL_TIMING, timing_batch
from vitstudy.experiments.multiexit.study import build_study
from vitstudy.models import create_model
from vitstudy.multiexit import SkipExitViT


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
    ticks = (1e-3 * tick for tick in itertools.count())  # a clock 1 ms on at every read, made lazily
    table, histogram, run = edge_latency.batch1_latency(study, point, spend, timer=lambda: next(ticks))
    assert table["arm"].tolist() == ["plain", edge_latency.EXIT_ARM, edge_latency.IDLE_ARM, CONTROL_LABEL]
    assert histogram["images"].sum() == spend.latency_images == run.raw["image"].nunique()
    exit_block = torch.tensor(np.repeat(histogram["exit_block"], histogram["images"]).to_numpy())
    row = table.set_index("arm").loc[edge_latency.EXIT_ARM]
    assert row["ideal_speedup"] == pytest.approx(study.costs.ideal_speedup(point["exits"], exit_block))
    assert row["exited_pct"] == pytest.approx(histogram["share_pct"][:-1].sum())
    idle = table.set_index("arm").loc[edge_latency.IDLE_ARM]
    assert idle["exited_pct"] == 0 and idle["overhead_pct"] == pytest.approx(0)


def test_batch1_operators_are_each_images_own_count(study):
    """The exit arm's operators per image, counted on one image per exit block and weighted, equal the mean of
    counting every image alone; plain's over each arm's is the operator-count ideal, the A/A copy's is plain's."""
    point = mixed_point(study)
    spend = edge_latency.budget("smoke")
    ticks = (1e-3 * tick for tick in itertools.count())
    table, _, _ = edge_latency.batch1_latency(study, point, spend, timer=lambda: next(ticks))
    rows = table.set_index("arm")
    images = timing_batch(study, spend.latency_images)
    models = edge_latency.batch1_models(study, point)
    one_by_one = {
        arm: np.mean([operators_per_image(models[arm], images[i : i + 1]) for i in range(len(images))])
        for arm in models
    }
    for arm, expected in one_by_one.items():
        assert rows.loc[arm, "operators_per_image"] == pytest.approx(expected)
        assert rows.loc[arm, "operator_ideal_speedup"] == pytest.approx(one_by_one["plain"] / expected)
    assert rows.loc[CONTROL_LABEL, "operators_per_image"] == one_by_one["plain"]
    empty = pd.DataFrame(columns=["arm", "setting"])
    idle_ops, plain_ops = one_by_one[edge_latency.IDLE_ARM], one_by_one["plain"]
    expected = f"it runs {idle_ops:.0f} operators per image against plain's {plain_ops:.0f}"
    assert expected in edge_latency.findings(table, empty, empty, empty, {})
    # leaving early runs fewer operators; exits that never fire run more than plain
    assert (
        rows.loc[edge_latency.EXIT_ARM, "operator_ideal_speedup"]
        > 1
        > rows.loc[edge_latency.IDLE_ARM, "operator_ideal_speedup"]
    )


def test_batch_sweep_has_an_aa_control_per_batch(study):
    """Every batch size gets plain, the exit and its own A/A control, the exit judged against its batch's ideal."""
    sweep, raw = edge_latency.batch_sweep(study, mixed_point(study), (1, 4), SMOKE_ONE_CALL_TIMING)
    assert sweep.groupby("batch_size")["arm"].apply(list).to_dict() == {
        b: ["plain", edge_latency.EXIT_ARM, CONTROL_LABEL] for b in (1, 4)
    }
    assert set(raw["batch_size"]) == {1, 4} and sweep["speedup"].notna().all()


def test_batch_sweep_counts_operators_beside_the_measured_gap(study):
    """Each batch size's arms carry their operators per image on that batch, counted, and plain's over the arm's;
    the closing puts the operator-count ideal beside the FLOP ideal and the measured speed-up."""
    point = mixed_point(study)
    sweep, _ = edge_latency.batch_sweep(study, point, (1, 4), SMOKE_ONE_CALL_TIMING)
    exit_model = study.configured(point["variant"], point["exits"], point["threshold"], "sample")
    for size, group in sweep.groupby("batch_size"):
        rows = group.set_index("arm")
        images = timing_batch(study, size)
        plain, exiting = operators_per_image(study.vit, images), operators_per_image(exit_model, images)
        assert rows.loc["plain", "operators_per_image"] == plain == rows.loc[CONTROL_LABEL, "operators_per_image"]
        assert rows.loc[edge_latency.EXIT_ARM, "operators_per_image"] == exiting
        assert rows.loc[edge_latency.EXIT_ARM, "operator_ideal_speedup"] == pytest.approx(plain / exiting)
    empty = pd.DataFrame(columns=["arm", "setting"])
    text = edge_latency.findings(empty, sweep, empty, empty, {})
    assert "operator-count ideal" in text and "at batch 4" in text


def test_vit_b_batch1_is_table_5_1_at_batch_one(tiny_vit):
    """Full model, a forced exit and the A/A control at batch 1, with the latency in ms."""
    table, _ = edge_latency.vit_b_batch1(tiny_vit, (1, 28, 28), (3,), SMOKE_ONE_CALL_TIMING)
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
    """A bad preset or batch size is one line naming it."""
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


def test_skip_exit_vit_matches_skipvit_when_no_image_exits(tiny_vit):
    """With exits before the drop region and none firing, the composed model's logits are the SkipViT model's own."""
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    exit_model = multiexit.MultiExitViT(copy.deepcopy(tiny_vit), (3,), threshold=1.0).eval()
    both = edge_latency.with_skipvit(exit_model, skipvit.HEADLINE)
    with torch.inference_mode():
        out = both(x)
        assert (out.exit_block == 12).all()
        torch.testing.assert_close(out.logits, both.vit(x))
    assert not isinstance(exit_model.vit, skipvit.SkipViTMixin)  # the original is left as it was


def test_exits_inside_the_drop_region_are_refused(tiny_vit):
    """Exits 6 and 9 cut the headline's region (blocks 6-11): compatible_exits keeps 3; with_skipvit refuses a cut and
    gives the core's SkipExitViT."""
    headline = skipvit.preset(skipvit.HEADLINE)
    assert edge_latency.compatible_exits((3, 6, 9), headline) == (3,)
    assert edge_latency.compatible_exits((3, 11), headline) == (3, 11)
    with pytest.raises(ValueError, match="exits"):
        edge_latency.with_skipvit(multiexit.MultiExitViT(tiny_vit, (3, 6, 9)), headline)
    assert isinstance(edge_latency.with_skipvit(multiexit.MultiExitViT(tiny_vit, (3,)), headline), SkipExitViT)


def test_composed_ideal_counts_each_image(study):
    """An image at the end pays the plain model over SkipViT's ideal plus its exit heads; one leaving at an exit
    before the drop region pays what it pays without SkipViT."""
    costs = study.costs
    at_end = edge_latency.composed_ideal(costs, (3,), torch.tensor([12, 12]), 1.25)
    assert at_end == pytest.approx(costs.plain() / (costs.plain() / 1.25 + costs.exit_head))
    at_exit = edge_latency.composed_ideal(costs, (3,), torch.tensor([3]), 1.25)
    assert at_exit == pytest.approx(costs.ideal_speedup((3,), torch.tensor([3])))


def test_composition_row_sets_measured_beside_the_product_of_ideals(study):
    """Exit, SkipViT, both and the A/A control; `product_of_ideals` is the exit's ideal times SkipViT's."""
    point = {**mixed_point(study), "exits": (3, 6, 9)}
    table, _ = edge_latency.composition_table(study, point, skipvit.HEADLINE, 16, SMOKE_ONE_CALL_TIMING)
    rows = table.set_index("arm")
    exit_arm, skip_arm, both_arm = (
        edge_latency.EXIT_ARM,
        edge_latency.SKIP_ARM,
        edge_latency.BOTH_ARM,
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
    field = edge_latency.load_field().set_index("document")
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
    ours = [edge_latency.our_row("ours", "timed", row, (0.2, -0.1, 0.5), "tiny", "fashion_mnist")]
    table = edge_latency.beside_field(edge_latency.load_field(), ours)
    published = table["block"] == edge_latency.PUBLISHED
    assert published.sum() == 3 and (~published).sum() == 1
    assert table.loc[published, list(edge_latency.OURS_COLUMNS)].isna().all().all()
    assert table.loc[~published, list(edge_latency.PUBLISHED_COLUMNS)].isna().all().all()
    assert table.loc[~published, "ours_top1_change_points"].item() == pytest.approx(-0.2)
