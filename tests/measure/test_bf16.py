"""The bf16 measurement (`python -m vitstudy measure bf16`): Table 5.1's forced exits and Table 1's training steps
with bf16 twins, at the smoke budget (numbers meaningless, every code path), on a machine with and without bf16
kernels (the fixtures make either on any CPU)."""

from __future__ import annotations

import pandas as pd
import pytest

from vitstudy import bench
from vitstudy.__main__ import MEASUREMENTS
from vitstudy.measure import bf16


@pytest.fixture(scope="module")
def smoke_table(tmp_path_factory):
    """The smoke table written to a temporary figures/ with bf16 twins timed (VITSTUDY_BF16=1), and its folder."""
    out = tmp_path_factory.mktemp("figures")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VITSTUDY_BF16", "1")  # bf16_kernels, for a module-scoped fixture
        table = bf16.measure("smoke", out=str(out))
    return table, out


def test_both_tables_get_bf16_twins_beside_their_fp32_rows(smoke_table):
    """Forced exits and training steps, each row's bf16 speed-up over fp32 measured; the baselines read
    "baseline", the A/A rows carry no bf16 twin."""
    table, _ = smoke_table
    assert list(table.columns) == list(bf16.COLUMNS)
    assert set(table["table"]) == {bf16.FORCED_EXITS, bf16.TRAINING_STEPS}
    twins = table[table["bf16_verdict"].notna()]
    assert len(twins) == 2 + 2  # plain + exit 1; baseline + headline row
    assert (twins["bf16_speedup_over_fp32"] > 0).all()
    assert (twins["bf16_verdict"] == bench.BASELINE_VERDICT).sum() == 2
    assert table["setting"].str.contains("A/A").sum() == 2


def test_the_table_names_the_machine_and_keeps_the_raw_times(smoke_table):
    """Every row says which device, which CPU instructions and whether bf16 kernels ran; the raw times hold the
    bf16 arms of both parts."""
    table, out = smoke_table
    assert table["device"].str.startswith("cpu: ").all() and table["cpu_capability"].notna().all()
    assert table["bf16_native"].all()
    assert (out / "tables" / "19_bf16.md").is_file()
    raw = pd.read_csv(out / "tables" / "raw" / "19_bf16.csv")
    assert {"plain (bf16)", "1 (bf16)", "baseline (bf16)"} <= set(raw["arm"])
    assert set(raw["table"]) == {bf16.FORCED_EXITS, bf16.TRAINING_STEPS}


@pytest.mark.usefixtures("no_bf16_kernels")
def test_without_bf16_kernels_the_bf16_columns_say_why(tmp_path):
    """On a device without bf16 kernels fp32 is still timed and every bf16 verdict says why nothing was."""
    table, _ = bf16.bf16_table(bf16.budget("smoke"), "cpu")
    timed = table[~table["setting"].str.contains("A/A")]
    assert (timed["bf16_verdict"] == bench.NOT_MEASURED_NO_BF16).all()
    assert timed["bf16_speedup_over_fp32"].isna().all() and timed["speedup"].notna().all()
    assert not table["bf16_native"].any()


def test_it_is_a_measurement_of_the_command_line():
    """`python -m vitstudy measure bf16` runs this module's measure()."""
    assert MEASUREMENTS["bf16"] == "bf16"


def test_training_rows_without_the_baseline_are_refused():
    with pytest.raises(ValueError, match=r"training_rows=\('skip_6_55_s11',\) is not allowed"):
        bf16.Bf16Budget("x", training_rows=("skip_6_55_s11",))
