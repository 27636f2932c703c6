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

NO_TIMING = bench.TimingSettings(warmup=0, runs=1)
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the cells of a machine without CUDA")


def test_interleaved_timing_on_cpu_gives_numbers_and_an_empty_note(tiny_vit, images):
    """Every timed model gets a positive images/s over the requested rounds, with nothing to note."""
    speed = multiexit.measure_interleaved({"a": tiny_vit, "b": tiny_vit}, images, bench.TimingSettings(0, 3))
    for row in speed.values():
        assert row["images_per_s"] > 0 and row["runs"] == 3 and row["note"] == ""


@needs_no_cuda
def test_interleaved_timing_on_an_absent_device_is_nan_with_a_note(tiny_vit, images):
    """On an absent device images/s is NaN, never a number or a sentence, and the note says why."""
    speed = multiexit.measure_interleaved({"plain": tiny_vit}, images, NO_TIMING, "cuda")
    assert math.isnan(speed["plain"]["images_per_s"]) and speed["plain"]["note"] == bench.NOT_MEASURED_NO_CUDA


@needs_no_cuda
def test_gpu_cells_say_not_measured_without_cuda(digits_study):
    """Timing on an absent CUDA device leaves NaN in every speed cell, numeric columns, and the reason in ``note``."""
    table = multiexit.table_5_2(digits_study, 0.9, 16, NO_TIMING, ["separate"], [(1,)], ["sample"], "cuda")
    assert table[["images_per_s", "plain_images_per_s", "speedup"]].isna().all().all()
    assert all(pd.api.types.is_float_dtype(table[c]) for c in ("images_per_s", "plain_images_per_s", "speedup"))
    assert (table["note"] == bench.NOT_MEASURED_NO_CUDA).all()
    assert 0 <= table["top1"].iloc[0] <= 100


@needs_no_cuda
def test_table_5_3_keeps_cpu_numbers_and_notes_the_missing_device(digits_study):
    """Table 5.3 has CPU speeds as numbers, NaN CUDA columns, and a note naming the CUDA columns."""
    table = multiexit.table_5_3(digits_study, 0.9, 16, NO_TIMING, ["separate"], [(1,)], ["sample"])
    assert (table["cpu_speedup"] > 0).all() and table["cuda_speedup"].isna().all()
    assert (table["note"] == f"cuda columns: {bench.NOT_MEASURED_NO_CUDA}").all()


@needs_no_cuda
def test_table_5_1_without_cuda_keeps_flop_ratios_and_notes_the_timing(tiny_vit):
    """Forced exits on an absent device: FLOP-ideal speed-ups are numbers, measured ones NaN with a note."""
    table = multiexit.table_5_1(tiny_vit, (1, 28, 28), 2, settings=NO_TIMING, device="cuda")
    assert table["exit_block"].tolist() == [12, 3, 6, 9]
    assert table["ideal_speedup"].iloc[1] == pytest.approx(4.0, rel=0.02)
    assert table[["images_per_s", "speedup", "measured_over_ideal"]].isna().all().all()
    assert (table["note"] == bench.NOT_MEASURED_NO_CUDA).all()


def test_report_5_1_numbers_sit_beside_each_exit_block(tiny_vit):
    """The report's Table 5.1 speed-up and images/s join our rows by exit block, in the saved column order."""
    ours = multiexit.table_5_1(tiny_vit, (1, 28, 28), 2, settings=NO_TIMING, device="cpu")
    table = multiexit.beside_report_5_1(ours, load_reference("multiexit_5.1"))
    assert list(table.columns) == list(multiexit.TABLE_5_1_COLUMNS)
    at = table.set_index("exit_block")
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


def test_performance_table_reports_points_lost(depth12_study):
    """The speed-target table states the per-sample setting's top-1 loss on the test set, in points."""
    point = {"variant": "separate", "exits": (3, 6, 9), "threshold": 0.5}
    table = multiexit.performance_table(depth12_study, point, 16, NO_TIMING)
    test = depth12_study.evaluate("separate", (3, 6, 9), 0.5, "sample")
    assert table["test_top1_loss"].dropna().tolist() == pytest.approx([test["top1_loss"]])
    assert not any("drop" in c for c in table.columns) and (table["note"] == "").all()
    assert (table["images_per_s"] > 0).all() and len(table) == 5
