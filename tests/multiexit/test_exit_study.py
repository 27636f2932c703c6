"""multiexit.study: the per-scale budget, offline rows, fitted variants, the batch-rule study, import direction."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from vitstudy import bench, multiexit
from vitstudy.config import SCALES, Scale, TrainConfig


@pytest.mark.parametrize("name", list(multiexit.EXIT_BUDGETS))
def test_budget_presets_keep_the_notebooks_former_settings(name):
    """Each scale's budget holds what notebooks 01-03 computed from the scale before the budget existed."""
    scale, budget = SCALES[name], multiexit.exit_budget(SCALES[name])
    smoke = name == "smoke"
    assert budget.scale == name
    assert budget.batch_size == (64 if smoke else scale.eval_batch_size)
    for settings in (budget.timing, budget.table_timing, budget.max_speed_timing):
        assert isinstance(settings, bench.CompareSettings) and (settings.rounds == 2) == smoke
    assert budget.max_speed_batch("cpu") == (2 if smoke else 8) and budget.max_speed_batch("cuda") == 64
    assert (budget.threshold, budget.max_loss, budget.head_epochs) == (0.9, 0.5, 30)


def test_every_report_scale_has_a_budget_and_study_scales_are_refused():
    """Every scale the report runs notebooks 01-03 at has a budget; the from-scratch study's scale has none."""
    from vitstudy.report import STUDY_SCALES

    assert set(multiexit.EXIT_BUDGETS) == set(SCALES) - set(STUDY_SCALES)
    with pytest.raises(ValueError, match=r"scale='scratch' is not allowed"):
        multiexit.exit_budget("scratch")


def test_budget_resolves_from_a_scale_its_name_or_the_environment(monkeypatch):
    """A Scale, its name and VITSTUDY_SCALE give the same budget."""
    monkeypatch.setenv("VITSTUDY_SCALE", "smoke")
    assert multiexit.exit_budget() == multiexit.exit_budget("smoke") == multiexit.exit_budget(SCALES["smoke"])


def test_a_scale_without_a_budget_is_refused_by_name():
    """A custom scale has no multi-exit budget: the error names it and the scales that have one."""
    with pytest.raises(ValueError, match=r"scale='custom' is not allowed: expected one of smoke, quick, full, paper"):
        multiexit.exit_budget(Scale("custom", TrainConfig()))
    with pytest.raises(ValueError, match=r"scale='huge'"):
        multiexit.exit_budget("huge")


def test_a_bad_budget_is_refused_at_construction():
    """Budgets validate like every other setting: the value and what is allowed."""
    with pytest.raises(ValueError, match=r"batch_size=0 is not allowed: expected an integer >= 1"):
        dataclasses.replace(multiexit.exit_budget("smoke"), batch_size=0)
    with pytest.raises(ValueError, match=r"threshold=1\.5 is not allowed"):
        dataclasses.replace(multiexit.exit_budget("smoke"), threshold=1.5)


def test_finetune_shares_one_head_between_exit_and_final(digits_study):
    """finetune's exit and final outputs use one fitted head; separate keeps the final head as trained."""
    finetune, separate = digits_study.model("finetune", (1,)), digits_study.model("separate", (1,))
    assert finetune.exit_heads[0] is finetune.final_head and finetune.final_head is not digits_study.vit.head
    assert separate.final_head is digits_study.vit.head and separate.exit_heads[0] is not separate.final_head


def test_an_unfitted_setting_is_refused(digits_study):
    """Asking the study for a setting it did not fit names the setting and the fitted ones."""
    with pytest.raises(ValueError, match=r"\(variant, exits\)=\('separate', \(2,\)\) is not allowed"):
        digits_study.model("separate", (2,))


def test_study_rows_report_accuracy_and_ideal_speedup(digits_study):
    """An offline row has top-1 in range, the points lost vs the plain model and a speed-up >= 1 when images leave."""
    row = digits_study.evaluate("separate", (1, 2), 0.0, "sample")
    assert row["exited_pct"] == 100 and row["at_1_pct"] == 100
    assert row["ideal_speedup"] == pytest.approx(digits_study.costs.plain() / digits_study.costs.per_exit((1, 2))[0])
    assert 0 <= row["top1"] <= 100 and row["top1_loss"] == pytest.approx(row["plain_top1"] - row["top1"])


def test_operating_point_keeps_the_upper_end_of_the_validation_interval_within_bounds(digits_study):
    """The chosen setting's 95% upper bound of validation points lost is <= max_loss (or it is the strictest)."""
    point = multiexit.choose_operating_point(
        digits_study, max_loss=0.5, thresholds=(0.5, 0.9, 1.0), exit_sets=[(1,), (1, 2)]
    )
    _, _, high = digits_study.top1_loss_interval(point["variant"], point["exits"], point["threshold"], "sample", "val")
    assert high <= 0.5 or point["threshold"] == 1.0


def test_paired_loss_interval_brackets_the_loss_and_is_zero_for_identical_models():
    """Points lost is plain minus exit accuracy; the paired interval holds it, and is [0, 0] when nothing differs."""
    plain = torch.tensor([True] * 90 + [False] * 10)
    exit_ = plain.clone()
    exit_[:5] = False  # five images lost, none gained: 5 points on 100 images
    loss, low, high = multiexit.paired_loss_interval(plain, exit_)
    assert loss == pytest.approx(5.0) and 0 < low <= 5.0 <= high
    assert multiexit.paired_loss_interval(plain, plain) == (0.0, 0.0, 0.0)


def test_batch_rule_exit_rate_falls_with_batch_size(digits_study):
    """Under the batch rule, bigger batches exit less often (the report's null result)."""
    threshold = multiexit.max_softmax(digits_study.logits("separate", (1,))[:, 0]).median().item()
    rates = multiexit.batch_rule_exit_rates(digits_study, "separate", (1,), [threshold], [1, 4, 64])
    shares = rates.sort_values("batch_size")["batch_exited_pct"].tolist()
    assert shares[0] >= shares[1] >= shares[2] and shares[0] > shares[2]


def test_batch_rule_arithmetic():
    """Max-softmax floor 1/C, and the confident share a batch of b needs to leave half the time: 0.5 ** (1/b)."""
    floor = multiexit.chance_floor_table((10, 1000), threshold=0.01).set_index("classes")
    assert floor.loc[10, "exit_guaranteed_per_image"] and not floor.loc[1000, "exit_guaranteed_per_image"]
    needed = multiexit.required_confident_share([256]).iloc[0]
    assert needed["confident_share_needed_pct"] == pytest.approx(100 * 0.5 ** (1 / 256))


def _own_imports(module: str) -> set[str]:
    """Modules of vitstudy.multiexit that ``module`` imports (relative imports ``from .x import``)."""
    tree = ast.parse((Path(multiexit.__file__).parent / f"{module}.py").read_text())
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}


def test_imports_go_one_way():
    """The study uses the lower modules only; tables, plots and the explorer use the study, never each other."""
    lower = {"exits", "model", "features", "costs"}
    assert _own_imports("study") <= lower
    for upper in ("tables", "plots", "explorer"):
        assert _own_imports(upper) <= lower | {"study"}
    for module in lower:
        assert not _own_imports(module) & {"study", "tables", "plots", "explorer"}
