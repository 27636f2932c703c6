"""multiexit.tables: numbers stay numbers (NaN + note when not measured), the report's rows beside ours."""

import math

import pandas as pd
import pytest
import torch

from vitstudy import bench, multiexit
from vitstudy.config import Scale, TrainConfig
from vitstudy.data import build_splits
from vitstudy.models import create_model
from vitstudy.reference import load_reference

NO_TIMING = bench.CompareSettings(rounds=2, min_run_time=0.001, warmup_calls=0, bootstrap=100)
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the cells of a machine without CUDA")
SPEED = ["images_per_s", "speedup", "speedup_low", "speedup_high", "measured_over_ideal"]


def test_time_models_adds_the_a_a_control_and_returns_models_to_the_cpu(tiny_vit, images):
    """Every model and the plain model's copy are timed; the copy is the control; models end on the CPU."""
    comparison = multiexit.time_models({"plain": tiny_vit, "b": tiny_vit}, images, NO_TIMING)
    assert set(comparison.raw["arm"]) == {"plain", "b", multiexit.CONTROL_ARM}
    assert comparison.control == multiexit.CONTROL_ARM and comparison.baseline == "plain"
    assert next(tiny_vit.parameters()).device.type == "cpu"


@needs_no_cuda
def test_time_models_on_an_absent_device_is_empty_with_the_note(tiny_vit, images):
    """On an absent device nothing runs: the comparison's speed-ups are NaN and its note says why."""
    comparison = multiexit.time_models({"plain": tiny_vit}, images, NO_TIMING, "cuda")
    assert math.isnan(comparison.speedup("plain")["speedup"]) and comparison.note == bench.NOT_MEASURED_NO_CUDA


def test_table_5_1_has_intervals_a_verdict_and_the_a_a_row(tiny_vit):
    """Table 5.1 on a tiny ViT: interval columns, a verdict per exit, the A/A control row, the protocol, a note."""
    table, comparison = multiexit.table_5_1(tiny_vit, (1, 28, 28), 2, settings=NO_TIMING)
    assert table["setting"].iloc[-1] == multiexit.CONTROL_LABEL and pd.isna(table["exit_block"].iloc[-1])
    assert (table["speedup_low"] <= table["speedup"]).all() and (table["speedup"] <= table["speedup_high"]).all()
    assert table["verdict"].iloc[1] == bench.flop_bound_verdict(table["measured_over_ideal"].iloc[1], (0.97, 1.03))
    assert table["note"].iloc[0] == comparison.control_note() and (table["rounds"] == 2).all()
    assert {"device", "threads", "note"} <= set(table.columns) and not comparison.raw.empty


@needs_no_cuda
def test_gpu_cells_say_not_measured_without_cuda(digits_study):
    """Timing on an absent CUDA device leaves NaN in every speed cell, numeric columns, and the reason in ``note``."""
    table, _ = multiexit.table_5_2(digits_study, 0.9, 16, NO_TIMING, ["separate"], [(1,)], ["sample"], "cuda")
    assert table[SPEED].isna().all().all() and all(pd.api.types.is_float_dtype(table[c]) for c in SPEED)
    assert (table["note"] == bench.NOT_MEASURED_NO_CUDA).all() and len(table) == 2
    assert 0 <= table["top1"].iloc[0] <= 100


@needs_no_cuda
def test_table_5_3_keeps_cpu_numbers_and_notes_the_missing_device(digits_study):
    """Table 5.3 has CPU speeds as numbers, NaN CUDA columns, a note naming the CUDA columns, raw CPU times."""
    table, raw = multiexit.table_5_3(digits_study, 0.9, 16, NO_TIMING, ["separate"], [(1,)], ["sample"])
    assert (table["cpu_speedup"] > 0).all() and table["cuda_speedup"].isna().all()
    assert table["note"].str.contains(f"cuda columns: {bench.NOT_MEASURED_NO_CUDA}", regex=False).all()
    assert table["setting"].tolist() == ["separate/1/sample", multiexit.CONTROL_LABEL]
    assert set(raw["device"].str.split(":").str[0]) == {"cpu"}


@needs_no_cuda
def test_table_5_1_without_cuda_keeps_flop_ratios_and_notes_the_timing(tiny_vit):
    """Forced exits on an absent device: FLOP-ideal speed-ups are numbers, measured ones NaN with a note."""
    table, _ = multiexit.table_5_1(tiny_vit, (1, 28, 28), 2, settings=NO_TIMING, device="cuda")
    assert table["exit_block"].tolist()[:4] == [12, 3, 6, 9]
    assert table["ideal_speedup"].iloc[1] == pytest.approx(4.0, rel=0.02)
    assert table[SPEED].isna().all().all() and (table["verdict"].iloc[1:] == "not measured").all()
    assert (table["note"] == bench.NOT_MEASURED_NO_CUDA).all()


def test_report_5_1_numbers_sit_beside_each_exit_block(tiny_vit):
    """The report's Table 5.1 speed-up and images/s join our rows by exit block, in the saved column order."""
    ours, _ = multiexit.table_5_1(tiny_vit, (1, 28, 28), 2, settings=NO_TIMING, device="cpu")
    table = multiexit.beside_report_5_1(ours, load_reference("multiexit_5.1"))
    assert list(table.columns) == list(multiexit.TABLE_5_1_COLUMNS)
    at = table.iloc[:4].set_index("exit_block")
    assert at.loc[3, "report_speed_improvement"] == pytest.approx(3.83)
    assert at.loc[12, "report_inference_speed_im_s"] == pytest.approx(447.10)
    assert table["speedup"].tolist() == ours["speedup"].tolist()


def test_report_numbers_sit_beside_matching_rows():
    """The report's Table 5.2 top-1 and speed-up join our rows by variant and exit; ours keep their own values."""
    ours = pd.DataFrame({"variant": ["finetune", "separate"], "exits": ["3", "3"], "top1": [90.0, 91.0]})
    table = multiexit.beside_report(ours, load_reference("multiexit_5.2"))
    assert table["report_top1"].iloc[0] == pytest.approx(83.52) and table["report_top1"].isna().iloc[1]
    assert table["top1"].tolist() == [90.0, 91.0]


@pytest.fixture(scope="module")
def depth12_study():
    """An untrained depth-12 ViT on a few digits with exits 3, 6, 9: the speed targets need the report's exits."""
    cfg = TrainConfig(model="vitstudy_tiny_patch4_28", model_kwargs=dict(img_size=8, patch_size=2), dataset="digits",
                      train_size=128, val_size=64, test_size=64, augment=False)  # fmt: skip
    torch.manual_seed(0)
    vit = create_model(cfg.model, **cfg.model_kwargs).eval()
    return multiexit.build_study(Scale("test", cfg, eval_batch_size=64), vit, build_splits(cfg), ["separate"],
                                 [(3, 6, 9)], head_epochs=1, progress=False)  # fmt: skip


def test_performance_table_reports_points_lost_with_its_interval(depth12_study):
    """The speed-target table states the per-sample test top-1 loss in points, with a paired interval around it."""
    point = {"variant": "separate", "exits": (3, 6, 9), "threshold": 0.5}
    table, _ = multiexit.performance_table(depth12_study, point, 16, NO_TIMING)
    test = depth12_study.evaluate("separate", (3, 6, 9), 0.5, "sample")
    row = table[table["test_top1_loss"].notna()].iloc[0]
    assert row["test_top1_loss"] == pytest.approx(test["top1_loss"])
    assert row["test_top1_loss_low"] <= row["test_top1_loss"] <= row["test_top1_loss_high"]
    assert table["measurement"].iloc[-1] == multiexit.CONTROL_LABEL and len(table) == 6
    assert (table["images_per_s"] > 0).all() and table["verdict"].notna().all()


def test_per_sample_controls_time_smaller_batches_and_a_keep_all_compaction(depth12_study):
    """The controls table: plain per-image speed-up at b, b-3, 0.86 b, b/2, the keep-all compaction, the A/A row."""
    table, comparison = multiexit.per_sample_controls(depth12_study, 16, NO_TIMING)
    assert table["batch_size"].tolist()[:4] == [16, 13, 14, 8] and multiexit.control_batch_sizes(256) == (
        256, 253, 220, 128)  # fmt: skip
    assert {"compaction keeping every row", multiexit.CONTROL_LABEL} <= set(table["arm"])
    assert table["per_image_speedup"].iloc[0] == pytest.approx(1.0)
    plain13 = comparison.speedup("plain, batch 13")
    assert table["per_image_speedup"].iloc[1] == pytest.approx(plain13["speedup"] * 13 / 16)
    assert (table["per_image_speedup_low"] <= table["per_image_speedup_high"]).all()


def test_compaction_keeping_every_row_gives_the_plain_logits(depth12_study, images):
    """Compacting with every row kept changes nothing: the output equals the plain model's."""
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    idle = multiexit.MultiExitViT(depth12_study.vit, (3, 6, 9))
    with torch.inference_mode():
        torch.testing.assert_close(multiexit.CompactionKeepsEveryRow(idle)(x), depth12_study.vit(x))


def test_forced_exit_verdict_needs_the_interval_inside_0_95_to_1_05():
    from vitstudy.multiexit.tables import forced_exit_verdict

    assert forced_exit_verdict(1.0, 0.96, 1.04).startswith("within target")
    wide = forced_exit_verdict(1.0, 0.87, 1.15)
    assert "not resolved" in wide and "0.87–1.15" in wide
    suspect = "exceeds the FLOP bound — measurement suspect"
    assert forced_exit_verdict(1.05, 0.99, 1.2) == suspect
    assert forced_exit_verdict(0.9, 0.85, 0.95) == "below target (0.97–1.03)"
