"""Notebook 11 (vitstudy.experiments.token_rules): the rules' levels, the arms, the table and the closing."""

import dataclasses
import math

import pandas as pd
import pytest
import torch

from vitstudy import bench
from vitstudy.config import SCALES
from vitstudy.experiments import token_rules
from vitstudy.models import create_model

FAST = bench.CompareSettings(rounds=2, min_run_time=0.001, warmup_calls=1, bootstrap=100, peak_size=64)


@pytest.fixture(scope="module")
def small_vit():
    """A depth-12 ViT on 28x28 images (49 patches, so block 6 / 11 exist), narrow so that counting FLOPs is quick."""
    torch.manual_seed(0)
    return create_model("vitstudy_tiny_patch4_28", embed_dim=24, num_heads=2).eval()


@pytest.fixture(scope="module")
def batch():
    return torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("rule", list(token_rules.RULES))
def test_every_level_is_within_two_percent_of_its_target(small_vit, rule):
    """Five levels from 1.1x, each parameter's FLOP ideal within 2 % of its level, and the arm built from it counts
    that FLOP ideal (torch's counter agrees with the token counts)."""
    levels = token_rules.solve_levels(small_vit, rule)
    assert len(levels) == token_rules.LEVEL_COUNT and levels[0].target == token_rules.LOWEST_LEVEL
    assert levels[-1].target <= token_rules.HIGHEST_LEVEL
    assert all(abs(level.ideal / level.target - 1) <= token_rules.LEVEL_TOLERANCE for level in levels)
    top = levels[-1]
    counted = bench.flops_per_image(small_vit, (1, 28, 28)) / bench.flops_per_image(
        token_rules.build_arm(small_vit, rule, top.parameter), (1, 28, 28)
    )
    assert counted == pytest.approx(top.ideal, rel=0.005)


def test_the_shared_levels_are_asked_for_exactly(small_vit):
    """Given targets, a rule is set to each; a target it cannot reach is one line naming the rule and the level."""
    levels = token_rules.solve_levels(small_vit, "tome", (1.1, 1.25, 1.4, 1.6, 1.8, 2.0))
    assert [level.target for level in levels] == [1.1, 1.25, 1.4, 1.6, 1.8, 2.0]
    with pytest.raises(ValueError, match=r"level 1.8x is not allowed for rule 'skip'"):
        token_rules.solve_levels(small_vit, "skip", (1.8,))


def test_skip_stops_where_four_skipped_blocks_stop(small_vit):
    """SkipViT's skip from block 6 to 11 leaves 8 of 12 blocks whole: its levels stop below 1.5x."""
    assert token_rules.solve_levels(small_vit, "skip")[-1].target < 1.5
    assert token_rules.solve_levels(small_vit, "drop")[-1].target > 1.8


@pytest.mark.parametrize("rule", list(token_rules.RULES))
def test_removing_nothing_is_the_baseline(small_vit, batch, rule):
    """Every rule at ratio / r 0 gives the baseline's logits exactly."""
    nothing = (0,) * len(small_vit.blocks) if rule == "tome" else 0
    with torch.no_grad():
        assert torch.equal(token_rules.build_arm(small_vit, rule, nothing)(batch), small_vit(batch))


def test_patch_dropout_is_active_at_inference_and_repeatable(small_vit, batch):
    """PatchDropout removes patches in eval, the same ones every call, and leaves the caller's random stream alone."""
    arm = token_rules.build_arm(small_vit, "patch_dropout", 20)
    tokens = arm.patch_drop(torch.randn(2, 50, 24))
    assert tokens.shape == (2, 50 - 20, 24)
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    with torch.no_grad():
        first, second = arm(batch), arm(batch)
    assert torch.equal(first, second) and torch.equal(torch.rand(1), expected)
    assert not torch.equal(first, small_vit(batch))


def test_level_count_is_checked():
    """Two levels at least (the lowest and the highest), asked for in one line."""
    assert token_rules.level_targets(1.5, 2) == (1.1, 1.5)
    with pytest.raises(ValueError, match=r"count=1 is not allowed: expected an integer >= 2"):
        token_rules.level_targets(1.5, 1)


def test_unknown_rule_is_one_clear_line(small_vit):
    with pytest.raises(ValueError, match=r"rule='evit' is not allowed: expected one of \('skip', 'fused'"):
        token_rules.build_arm(small_vit, "evit", 3)


@pytest.mark.parametrize("scale", ["smoke", "quick", "full"])
def test_every_scale_it_runs_at_has_a_budget(scale):
    assert token_rules.budget(SCALES[scale]).scale == scale
    assert token_rules.budget(scale).cluttered.dataset == "fashion_mnist_cluttered"


def test_paper_scale_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"scale='paper' is not allowed: expected one of smoke, quick, full"):
        token_rules.budget("paper")


def test_table_has_every_rule_level_and_the_control(smoke_cache, share_cache):
    """The smoke table: the baseline, the levels of every rule, the A/A control last; each row's columns."""
    share_cache(smoke_cache, ("baselines",))
    chosen = dataclasses.replace(token_rules.budget("smoke"), timing=FAST)
    table, raw = token_rules.rules_table("fashion_mnist", chosen, device="cpu")
    assert set(token_rules.COLUMNS) <= set(table.columns)
    assert list(table["rule"]) == (
        ["baseline"]
        + [rule for rule in token_rules.RULES for _ in range(chosen.levels)]
        + [bench.control_arm("baseline")]
    )
    assert table["verdict"].iloc[-1].startswith("A/A control")
    assert table["verdict"].iloc[0] == bench.BASELINE_VERDICT
    levels = table[table["rule"].isin(list(token_rules.RULES))]
    assert ((levels["ideal_speedup"] / levels["level"] - 1).abs() <= token_rules.LEVEL_TOLERANCE).all()
    assert (table["test_images"] == chosen.evaluated_images).all() and levels["top1"].between(0, 100).all()
    assert set(raw["arm"]) == {"baseline", bench.control_arm("baseline"), *(a for a in table_arms(table))}
    fig = token_rules.curves_plot(table)
    assert len(fig.axes[0].get_legend().get_texts()) == len(token_rules.RULES) + 1


def table_arms(table):
    rules = table[table["rule"].isin(list(token_rules.RULES))]
    return [f"{rule} {level:.2f}×" for rule, level in zip(rules["rule"], rules["level"])]


def hand_table(dataset="fashion_mnist", control=(1.0, 0.99, 1.01), images=10_000):
    """A hand-made table: ToMe best at equal measured speed, PatchDropout worst, the A/A control as given."""
    rows = [dict(rule="baseline", level=1.0, top1=90.0, speedup=1.0, speedup_low=1.0, speedup_high=1.0)]
    curves = {
        "skip": [(1.1, 1.08, 89.9), (1.3, 1.2, 89.0)],
        "fused": [(1.1, 1.05, 89.8), (1.5, 1.4, 88.0)],
        "drop": [(1.1, 1.05, 89.5), (1.5, 1.4, 87.0)],
        "tome": [(1.1, 0.98, 89.95), (1.5, 1.3, 89.5)],
        "patch_dropout": [(1.1, 1.1, 85.0), (1.5, 1.5, 70.0)],
    }
    for rule, points in curves.items():
        for ideal, speed, top1 in points:
            rows.append(
                dict(
                    rule=rule,
                    level=ideal,
                    ideal_speedup=ideal,
                    top1=top1,
                    speedup=speed,
                    speedup_low=speed - 0.01,
                    speedup_high=speed + 0.01,
                    measured_over_ideal=speed / ideal,
                )
            )
    speed, low, high = control
    rows.append(
        dict(
            rule=bench.control_arm("baseline"),
            level=1.0,
            top1=math.nan,
            speedup=speed,
            speedup_low=low,
            speedup_high=high,
            verdict=bench.control_verdict(speed),
        )
    )
    table = pd.DataFrame(rows)
    table.loc[table["rule"] == "baseline", "ideal_speedup"] = 1.0
    return table.assign(dataset=dataset, test_images=images)


def test_findings_name_the_best_rule_at_equal_measured_speed():
    """At 1.2x (the fastest every rule reaches) ToMe loses least; signs in words; caveats said."""
    text = token_rules.findings({"fashion_mnist": hand_table()})
    assert "at 1.20× measured" in text
    assert "ToMe keeps the most top-1: it loses" in text
    assert "PatchDropout loses 8.75 points" in text and "loses -" not in text
    assert "off the shelf" in text and "One seed" in text and "10,000 test images" in text
    assert "not trustworthy" not in text
    assert 3 <= text.count(". ") + 1 <= 6


def test_findings_under_a_failed_control_compare_by_flop_ideal():
    """A failed A/A control: the speeds are called not trustworthy and the rules are compared at equal FLOP ideal."""
    text = token_rules.findings({"fashion_mnist_cluttered": hand_table(control=(1.05, 1.03, 1.07))})
    assert "On cluttered Fashion-MNIST the measured speed-ups are not trustworthy (A/A 1.05×" in text
    assert "at 1.30× FLOP ideal" in text


def test_a_rule_never_faster_is_named_not_ranked():
    table = hand_table()
    table.loc[table["rule"] == "tome", ["speedup", "speedup_low", "speedup_high"]] = 0.9
    text = token_rules.findings({"fashion_mnist": table})
    assert "ToMe never ran faster than the baseline" in text
    assert "EViT's fused token keeps the most" in text or "SkipViT's skip keeps the most" in text


def test_top1_is_read_off_the_curve_between_levels():
    table = hand_table()
    assert token_rules.top1_at(table, "skip", 1.14) == pytest.approx(89.45)
    assert math.isnan(token_rules.top1_at(table, "skip", 1.3))
