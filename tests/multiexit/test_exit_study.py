"""multiexit.study: the offline ExitStudy (fitted variants, offline rows, the paired interval), import direction;
experiments.multiexit.study's paired interval of two models' correctness."""

import ast
from pathlib import Path

import pytest
import torch
from scipy import stats

from vitstudy import multiexit
from vitstudy.experiments.multiexit import max_speed_exit
from vitstudy.experiments.multiexit.study import paired_loss_interval


def test_finetune_shares_one_head_between_exit_and_final(digits_study):
    """finetune's exit and final outputs use one fitted head; separate keeps the final head as trained."""
    finetune, separate = digits_study.model("finetune", (1,)), digits_study.model("separate", (1,))
    assert finetune.exit_heads[0] is finetune.final_head and finetune.final_head is not digits_study.vit.head
    assert separate.final_head is digits_study.vit.head and separate.exit_heads[0] is not separate.final_head


def test_an_unfitted_setting_is_refused(digits_study):
    """Asking the study for a setting it did not fit names the setting and the fitted ones."""
    with pytest.raises(ValueError, match=r"\(variant, exits\)=\('separate', \(2,\)\) is not allowed"):
        digits_study.model("separate", (2,))


def test_a_configured_setting_shares_the_fitted_model_and_sets_its_knobs(digits_study):
    """configured() is a copy with its own threshold and policy that shares the backbone and heads."""
    fitted = digits_study.model("separate", (1, 2))
    timed = digits_study.configured("separate", (1, 2), 0.7, "batch")
    assert (timed.threshold, timed.policy) == (0.7, "batch") and (fitted.threshold, fitted.policy) == (1.0, "sample")
    assert timed.vit is fitted.vit and timed.exit_heads[0] is fitted.exit_heads[0]


def test_study_rows_report_accuracy_and_ideal_speedup(digits_study):
    """An offline row has top-1 in range, the points lost vs the plain model and a speed-up >= 1 when images leave."""
    row = digits_study.evaluate("separate", (1, 2), 0.0, "sample")
    assert row["exited_pct"] == 100 and row["at_1_pct"] == 100
    assert row["ideal_speedup"] == pytest.approx(digits_study.costs.plain() / digits_study.costs.per_exit((1, 2))[0])
    assert 0 <= row["top1"] <= 100 and row["top1_loss"] == pytest.approx(row["plain_top1"] - row["top1"])


def test_a_settings_loss_interval_is_the_paired_interval_of_its_correct_images(digits_study):
    """top1_loss_interval is the points lost on the test images (the row's top1_loss) and the paired interval of the
    plain and exit correctness on them."""
    setting = ("separate", (1, 2), 0.5, "sample")
    interval = digits_study.top1_loss_interval(*setting)
    row = digits_study.evaluate(*setting)
    assert interval[0] == pytest.approx(row["top1_loss"]) and interval[1] <= interval[0] <= interval[2]
    expected = paired_loss_interval(digits_study.plain_correct(), digits_study.correct(*setting))
    assert interval == pytest.approx(expected)


def test_exits_labels_round_trip():
    """An exit set written for a table reads back as the same tuple."""
    assert multiexit.exits_label((3, 6, 9)) == "3,6,9" and multiexit.parse_exits("3,6,9") == (3, 6, 9)


def test_paired_loss_interval_brackets_the_loss_and_is_zero_for_identical_models():
    """Points lost is plain minus exit accuracy; the paired interval holds it, and is [0, 0] when nothing differs."""
    plain = torch.tensor([True] * 90 + [False] * 10)
    exit_ = plain.clone()
    exit_[:5] = False  # five images lost, none gained: 5 points on 100 images
    loss, low, high = paired_loss_interval(plain, exit_)
    assert loss == pytest.approx(5.0) and 0 < low <= 5.0 <= high
    assert paired_loss_interval(plain, plain) == (0.0, 0.0, 0.0)


def test_paired_loss_interval_is_the_bootstrap_distributions_quantiles():
    """With only losses, a resample's loss count is Binomial(N, lost / N): the percentile interval of
    ``bench.paired_difference_interval`` lands on the binomial's 2.5% and 97.5% quantiles."""
    plain = torch.ones(400, dtype=torch.bool)
    exit_ = plain.clone()
    exit_[:20] = False  # 5 % lost
    _, low, high = paired_loss_interval(plain, exit_)
    expected = 100 * stats.binom.ppf([0.025, 0.975], 400, 0.05) / 400
    assert (low, high) == pytest.approx(tuple(expected), abs=0.25)  # within one image (0.25 points)


def test_paired_loss_interval_of_one_image_is_its_difference():
    """One image: every resample is that image, so the interval is the point."""
    assert paired_loss_interval(torch.tensor([True]), torch.tensor([False])) == (100.0, 100.0, 100.0)


# ----------------------------------------------------------------------------------------------------------
# Import direction


def _own_imports(path: Path) -> set[str]:
    """Modules of vitstudy.multiexit (``.x``) and vitstudy.experiments (``..experiments``) that ``path`` imports."""
    tree = ast.parse(path.read_text())
    return {("." * n.level) + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}


CORE = Path(multiexit.__file__).parent
EXPERIMENTS = Path(max_speed_exit.__file__).parent


def test_core_imports_go_one_way():
    """exits <- model <- heads, costs <- study <- joint, explorer; no core module imports the experiments."""
    allowed = {
        "exits": set(),
        "model": {"exits"},
        "heads": {"model"},
        "costs": {"model"},
        "study": {"costs", "exits", "heads", "model"},
        "joint": {"heads", "model", "study"},
        "explorer": {"exits", "study"},
    }
    for module, lower in allowed.items():
        own = _own_imports(CORE / f"{module}.py")
        assert {m[1:] for m in own if m.startswith(".") and not m.startswith("..")} <= lower, module
        assert not any("experiments" in m for m in own), module


NOTEBOOK_MODULES = ("max_speed_exit", "real_data_exit", "cpu_vs_gpu", "edge_latency")  # 01, 02, 03, 10 (07: common)


def test_each_notebook_module_imports_only_common_among_its_siblings():
    """One module per notebook; what two or more share is common.py. A notebook module imports, among its siblings,
    only common and the study's plumbing (study); common imports only study; any of them may use the shared phrasing
    of findings (experiments.sentences)."""
    siblings = {p.stem for p in EXPERIMENTS.glob("*.py")} - {"__init__"}
    assert set(NOTEBOOK_MODULES) | {"common", "study"} == siblings
    allowed = {**dict.fromkeys(NOTEBOOK_MODULES, {"common", "study"}), "common": {"study"}}
    for module, lower in allowed.items():
        own = _own_imports(EXPERIMENTS / f"{module}.py")
        assert {m[1:] for m in own if m.startswith(".") and not m.startswith("..")} <= lower, module
        assert {m[2:] for m in own if m.startswith("..") and not m.startswith("...")} <= {"sentences"}, module
