"""multiexit.plots: figures from tables, a device that was not measured named but not drawn."""

import math

import pandas as pd

from vitstudy import bench, multiexit
from vitstudy.reference import load_reference


def test_device_bars_name_a_device_that_was_not_measured():
    """CPU bars are drawn and in the legend; the unmeasured CUDA device is only named in the title."""
    table = pd.DataFrame({"variant": ["same", "separate"], "exits": ["3", "3"], "policy": ["sample", "batch"],
                          "cpu_speedup": [1.5, 0.9], "cuda_speedup": [math.nan, math.nan]})  # fmt: skip
    ax = multiexit.device_speedup_bars(table).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cpu"]
    assert f"cuda: {bench.NOT_MEASURED_NO_CUDA}" in ax.get_title()
    assert sorted(p.get_height() for p in ax.patches if not math.isnan(p.get_height())) == [0.9, 1.5]


def test_speed_bars_put_the_report_beside_ours():
    """Table 5.1's bars: ours measured, ours FLOP-ideal and the report's, one group per exit block."""
    table = pd.DataFrame({"exit_block": [12, 3], "speedup": [1.0, 3.5], "ideal_speedup": [1.0, 3.9]})
    ax = multiexit.speed_bars(table, load_reference("multiexit_5.1")).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["exit 3", "original"]
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "report, measured (RTX A6000)"
    assert 3.83 in [round(p.get_height(), 2) for p in ax.patches]
