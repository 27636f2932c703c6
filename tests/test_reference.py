"""Tests for the transcribed reference tables in vitstudy.reference."""

import pandas as pd
import pytest

from vitstudy.reference import TABLES, load_reference


@pytest.mark.parametrize("table_id", sorted(TABLES))
def test_every_table_loads_with_document_and_table_columns(table_id: str) -> None:
    """Every table id loads to a non-empty frame with document and table columns."""
    df = load_reference(table_id)
    assert len(df) > 0
    assert {"document", "table"} <= set(df.columns)
    assert df["document"].isin(["multiexit_report", "skipvit_paper"]).all()


def test_unknown_id_raises_value_error_naming_it() -> None:
    """An unknown id raises ValueError that names the id and lists the allowed ones."""
    with pytest.raises(ValueError, match="no_such_table") as excinfo:
        load_reference("no_such_table")
    assert "skipvit_1" in str(excinfo.value)


def _value(df: pd.DataFrame, **where: object) -> float:
    """Return the single `value` cell of the row matching every column=value given."""
    mask = pd.Series(True, index=df.index)
    for col, val in where.items():
        mask &= df[col] == val
    assert mask.sum() == 1, where
    return float(df.loc[mask, "value"].iloc[0])


def test_multiexit_5_1_block3_speed() -> None:
    """Table 5.1 exit at block 3 is 1714.03 im/s and a 3.83x speed-up."""
    df = load_reference("multiexit_5.1")
    assert _value(df, exit_block=3, metric="inference_speed_im_s") == pytest.approx(1714.03)
    assert _value(df, exit_block=3, metric="speed_improvement") == pytest.approx(3.83)


def test_multiexit_5_1_original_model_is_exit_block_12() -> None:
    """Table 5.1 stores the original model as exit_block 12 (447.10 im/s)."""
    df = load_reference("multiexit_5.1")
    assert _value(df, exit_block=12, metric="inference_speed_im_s") == pytest.approx(447.10)


def test_multiexit_5_2_scratch_accuracy() -> None:
    """Table 5.2 Scratch classifier exiting at block 6 has 80.91 % accuracy."""
    df = load_reference("multiexit_5.2")
    assert _value(df, classifier="Scratch", exit_block=6, metric="accuracy_pct") == pytest.approx(80.91)


def test_multiexit_5_3_same_cpu_speed() -> None:
    """Table 5.3 Same/CPU original-model speed is 33.04 im/s, labelled as extracted."""
    df = load_reference("multiexit_5.3")
    row = df[(df["source_row"] == 1) & (df["exit_block"] == 12)].iloc[0]
    assert (row["classifier"], row["device"], row["value"]) == ("Same", "CPU", pytest.approx(33.04))
    assert row["label_status"] == "as_extracted"


def test_multiexit_5_3_every_inferred_or_ambiguous_row_has_note() -> None:
    """Table 5.3 rows whose labels are not printed on them all carry a note."""
    df = load_reference("multiexit_5.3")
    unsure = df[df["label_status"] != "as_extracted"]
    assert len(unsure) > 0
    assert unsure["note"].notna().all()


def test_skipvit_1_has_all_nine_rows() -> None:
    """SkipViT Table 1 has its 9 rows: 1 baseline, 1 fused token, 7 skip."""
    df = load_reference("skipvit_1")
    assert len(df) == 9
    assert df["variant"].value_counts().to_dict() == {"skip": 7, "baseline": 1, "fused_token": 1}


def test_skipvit_1_headline_row() -> None:
    """SkipViT Table 1 55 % row: 5098 im/s, +13.23 %, 70.16 top-1, -0.01."""
    df = load_reference("skipvit_1")
    row = df[df["drop_ratios"] == "0.55"].iloc[0]
    assert (row["drop_layers"], row["skip_layer"]) == ("6", 11)
    assert row["throughput_im_s"] == 5098
    assert row["throughput_gain_pct"] == pytest.approx(13.23)
    assert row["top1"] == pytest.approx(70.16)
    assert row["top1_diff"] == pytest.approx(-0.01)


def test_skipvit_1_baseline_has_empty_gain() -> None:
    """SkipViT Table 1 baseline keeps unprinted cells empty rather than zero."""
    row = load_reference("skipvit_1").query("variant == 'baseline'").iloc[0]
    assert row["throughput_im_s"] == 4503
    assert pd.isna(row["throughput_gain_pct"]) and pd.isna(row["top1_diff"]) and pd.isna(row["skip_layer"])


def test_skipvit_2_batch_size() -> None:
    """SkipViT Table 2 batch size is 288."""
    df = load_reference("skipvit_2")
    assert _value(df, parameter="batch_size") == 288


def test_skipvit_3_warmup_15() -> None:
    """SkipViT Table 3 with 15 warm-up epochs reaches 69.73 top-1 at skip layer 10."""
    row = load_reference("skipvit_3").query("warmup_epochs == 15").iloc[0]
    assert row["top1"] == pytest.approx(69.73)
    assert row["skip_layer"] == 10
