"""The machine's peak (vitstudy.bench.peak) and how close a timed baseline runs to it (bench.machine_use,
bench.bf16_columns): a fake clock gives FLOPs / time, rows carry the arithmetic, the manifest records the peak."""

from __future__ import annotations

import json
import math
import textwrap

import pandas as pd
import pytest
import torch

from vitstudy import bench
from vitstudy.bench import peak as peak_module
from vitstudy.bench import rows as rows_module
from vitstudy.bench.comparison import CompareSettings, Comparison, calibration_arm, compare
from vitstudy.report import runner

TWO_ROUNDS = CompareSettings(rounds=2, min_run_time=0.01, warmup_calls=0, bootstrap=100, peak_size=32)


class SteppingClock:
    """A clock that moves ``step`` fake seconds every time it is read: each timed block of ``Timer`` reads it twice,
    so a block of one call lasts exactly ``step``."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def fresh_peaks(monkeypatch: pytest.MonkeyPatch) -> dict:
    """An empty peak cache, so one test's measurement does not answer another's."""
    cache: dict = {}
    monkeypatch.setattr(peak_module, "_measured", cache)
    return cache


@pytest.fixture
def counted_matmul(monkeypatch: pytest.MonkeyPatch, fresh_peaks: dict) -> list:
    """Replace the matmul timing by a record of its calls, answering 100 GFLOP/s in fp32 and 300 in bf16."""
    calls: list = []

    def fake(size, dtype, device="cpu", threads=None, min_run_time=0.5, timer=None):
        calls.append((size, str(dtype), str(device), threads))
        return 300.0 if dtype == peak_module.PEAK_DTYPES["bf16"] else 100.0

    monkeypatch.setattr(peak_module, "matmul_gflop_per_s", fake)
    return calls


# ----------------------------------------------------------------------------------------------------------
# The peak


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_matmul_peak_is_flops_over_seconds_on_a_fake_clock(dtype: str) -> None:
    """A 64 x 64 matmul timed by a clock that gives each call 0.5 s: 2 x 64^3 FLOPs / 0.5 s."""
    gflop_per_s = bench.matmul_gflop_per_s(64, peak_module.PEAK_DTYPES[dtype], "cpu", 1, 0.2, SteppingClock(0.5))
    assert gflop_per_s == pytest.approx(2 * 64**3 / 0.5 / 1e9)


@pytest.mark.usefixtures("bf16_kernels")
def test_machine_peak_is_measured_once_per_device_threads_and_size(counted_matmul: list) -> None:
    """The second call answers from the cache; another thread count or size is measured anew."""
    assert bench.machine_peak("cpu", 2, 128) == {"fp32": 100.0, "bf16": 300.0}
    assert bench.machine_peak("cpu", 2, 128) == {"fp32": 100.0, "bf16": 300.0}
    assert len(counted_matmul) == 2
    bench.machine_peak("cpu", 1, 128)
    bench.machine_peak("cpu", 1, 64)
    assert [(size, threads) for size, _, _, threads in counted_matmul[2:]] == [(128, 1), (128, 1), (64, 1), (64, 1)]
    assert {r["dtype"] for r in bench.measured_peaks()} == {"fp32", "bf16"} and len(bench.measured_peaks()) == 6


def test_machine_peak_on_an_absent_device_is_nan_and_not_cached(no_cuda: None, counted_matmul: list) -> None:
    """No CUDA device: NaN for both precisions, nothing timed, nothing recorded."""
    peak = bench.machine_peak("cuda", 2)
    assert math.isnan(peak["fp32"]) and math.isnan(peak["bf16"])
    assert counted_matmul == [] and bench.measured_peaks() == []


def test_the_default_matmul_is_2048_on_a_cpu() -> None:
    """2048 on a CPU (compute-bound there), larger on a GPU; a size given wins."""
    assert peak_module.peak_size("cpu") == 2048 and peak_module.peak_size("cuda") > 2048
    assert peak_module.peak_size("cpu", 256) == 256


@pytest.mark.usefixtures("bf16_kernels")
def test_each_new_peak_is_written_to_the_record_file(counted_matmul, tmp_path, monkeypatch) -> None:
    """With $VITSTUDY_PEAK_RECORD set, the file holds every peak measured so far; without a file, none."""
    record = tmp_path / "peak.json"
    assert bench.read_peak_record(record) == []
    monkeypatch.setenv(bench.PEAK_RECORD_ENV, str(record))
    bench.machine_peak("cpu", 2, 128)
    saved = bench.read_peak_record(record)
    assert [(r["dtype"], r["threads"], r["matmul_size"], r["gflop_per_s"]) for r in saved] == [
        ("fp32", 2, 128, 100.0),
        ("bf16", 2, 128, 300.0),
    ]


@pytest.mark.usefixtures("bf16_kernels")
def test_compare_records_the_peak_at_the_timed_threads(counted_matmul: list) -> None:
    """compare measures the peak at the settings' threads and matmul size into the comparison's environment."""
    settings = CompareSettings(rounds=2, min_run_time=0.01, warmup_calls=0, bootstrap=100, threads=1, peak_size=32)
    result = compare({"a": calibration_arm(10), "b": calibration_arm(10)}, "a", settings=settings)
    assert result.environment["peak_fp32_gflop_per_s"] == 100.0 and result.environment["peak_bf16_gflop_per_s"] == 300
    assert result.environment["peak_matmul_size"] == 32 and {c[3] for c in counted_matmul} == {1}


def test_compare_with_a_test_clock_measures_no_peak(counted_matmul: list) -> None:
    """Fake seconds have no peak: NaN, and nothing is timed for it."""
    result = compare({"a": calibration_arm(10)}, "a", settings=TWO_ROUNDS, timer=SteppingClock(1.0))
    assert math.isnan(result.environment["peak_fp32_gflop_per_s"]) and counted_matmul == []


def test_a_bad_peak_size_is_refused() -> None:
    with pytest.raises(ValueError, match=r"peak_size=4 is not allowed: expected None or an integer >= 16"):
        CompareSettings(peak_size=4)


# ----------------------------------------------------------------------------------------------------------
# The rows: how close the baseline runs, and the bf16 columns


def synthetic(seconds: dict[str, float], work: bench.BaselineWork | None) -> Comparison:
    """A comparison whose arms took ``seconds`` per call in each of three rounds; peaks 100 / 400 GFLOP/s."""
    raw = pd.DataFrame(
        [
            {"arm": arm, "round": r, "position": 0, "block": 0, "seconds_per_call": s, "calls": 1}
            for r in range(3)
            for arm, s in seconds.items()
        ]
    )
    env = {**bench.environment_info("cpu"), "peak_fp32_gflop_per_s": 100.0, "peak_bf16_gflop_per_s": 400.0}
    return Comparison(raw, "base", "base (A/A copy)", TWO_ROUNDS, env, work=work)


SECONDS = {"base": 0.5, "fast": 0.25, "base (A/A copy)": 0.5, "base (bf16)": 0.2, "fast (bf16)": 0.1}


def test_every_row_carries_the_baselines_flop_rate_and_share_of_the_peak() -> None:
    """1 GFLOP per image, 10 images per call in 0.5 s: 20 GFLOP/s, 0.2 of the 100 GFLOP/s fp32 peak, on every row."""
    comparison = synthetic(SECONDS, bench.BaselineWork(1e9))
    for arm, ideal in (("base", 1.0), ("fast", 2.0)):
        row = bench.speed_row(comparison, arm, 10, ideal, (0.9, 1.03))
        assert row["baseline_gflop_per_s"] == pytest.approx(20.0) and row["peak_gflop_per_s"] == 100.0
        assert row["baseline_fraction_of_peak"] == pytest.approx(0.2)
        assert (row["flops_counted"], row["peak_dtype"]) == (bench.FORWARD, "fp32")
    assert bench.control_row(comparison, 10)["baseline_fraction_of_peak"] == pytest.approx(0.2)


def test_a_training_step_counts_three_forwards() -> None:
    """BaselineWork.training_step: 3 x the forward FLOPs, and the row says so."""
    work = bench.BaselineWork.training_step(1e9)
    row = bench.speed_row(synthetic(SECONDS, work), "base", 10, 1.0, (0.9, 1.03))
    assert work.flops_per_image == 3e9 and row["baseline_gflop_per_s"] == pytest.approx(60.0)
    assert row["flops_counted"] == bench.TRAINING_STEP == "training step = 3 × forward"


def test_without_a_flop_count_the_rate_is_nan_and_says_so() -> None:
    row = bench.speed_row(synthetic(SECONDS, None), "base", 10, 1.0, (0.9, 1.03))
    assert math.isnan(row["baseline_gflop_per_s"]) and row["flops_counted"] == rows_module.NOT_COUNTED


def test_bf16_columns_set_a_twin_against_fp32_and_its_bf16_baseline() -> None:
    """base 0.5 s vs its bf16 twin 0.2 s: 2.5x over fp32; fast in bf16 (0.1 s) is 2x the bf16 baseline, ideal 2:
    1.00 of its ideal; the bf16 baseline's 50 GFLOP/s is 0.125 of the 400 GFLOP/s bf16 peak."""
    comparison = synthetic(SECONDS, bench.BaselineWork(1e9))
    base = bench.bf16_columns(comparison, "base", 10, 1.0, (0.9, 1.03))
    assert base["bf16_speedup_over_fp32"] == pytest.approx(2.5) and base["bf16_verdict"] == bench.BASELINE_VERDICT
    assert base["bf16_speedup_over_fp32_low"] == pytest.approx(2.5) == base["bf16_speedup_over_fp32_high"]
    assert base["bf16_baseline_gflop_per_s"] == pytest.approx(50.0) and base["bf16_peak_gflop_per_s"] == 400.0
    assert base["bf16_baseline_fraction_of_peak"] == pytest.approx(0.125)
    fast = bench.bf16_columns(comparison, "fast", 10, 2.0, (0.9, 1.03))
    assert fast["bf16_speedup_over_fp32"] == pytest.approx(2.5) and fast["bf16_images_per_s"] == pytest.approx(100)
    assert fast["bf16_measured_over_ideal"] == pytest.approx(1.0)
    assert fast["bf16_verdict"] == bench.flop_bound_verdict(1.0, (0.9, 1.03), interval=(1.0, 1.0))


@pytest.mark.usefixtures("bf16_kernels")
def test_a_row_without_a_bf16_twin_says_it_was_not_timed() -> None:
    """A row the budget did not time in bf16: NaN numbers and NOT_TIMED_BF16; the bf16 baseline's rate stays."""
    comparison = synthetic({k: v for k, v in SECONDS.items() if k != "fast (bf16)"}, bench.BaselineWork(1e9))
    fast = bench.bf16_columns(comparison, "fast", 10, 2.0, (0.9, 1.03))
    assert fast["bf16_verdict"] == bench.NOT_TIMED_BF16 and math.isnan(fast["bf16_speedup_over_fp32"])
    assert fast["bf16_baseline_gflop_per_s"] == pytest.approx(50.0)


@pytest.mark.usefixtures("bf16_kernels")
def test_compare_models_times_bf16_twins_and_counts_the_baselines_forward() -> None:
    """compare_models(bf16=...) adds a bf16 twin per named model; its work is the baseline's forward FLOPs."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    comparison = bench.compare_models({"plain": model}, torch.randn(4, 3, 2, 2), TWO_ROUNDS, bf16=["plain"])
    assert set(comparison.raw["arm"]) == {"plain", "plain (A/A copy)", "plain (bf16)"}
    assert comparison.work == bench.BaselineWork(2 * 12 * 5)
    with pytest.raises(ValueError, match=r"bf16=\('other',\) is not allowed"):
        bench.compare_models({"plain": model}, torch.randn(4, 3, 2, 2), TWO_ROUNDS, bf16=["other"])


@pytest.mark.usefixtures("no_bf16_kernels")
def test_without_bf16_kernels_nothing_is_timed_in_bf16_and_the_rows_say_why(counted_matmul: list) -> None:
    """On a device without bf16 kernels (an AVX2-only CPU: autocast falls back to a reference matmul hundreds of
    times slower) the bf16 peak is NaN and never timed, compare_models adds no bf16 twin, and every row's bf16
    verdict says why it is empty."""
    peak = bench.machine_peak("cpu", 2, 128)
    assert peak["fp32"] == 100.0 and math.isnan(peak["bf16"])
    assert [dtype for _, dtype, _, _ in counted_matmul] == [str(torch.float32)]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    comparison = bench.compare_models({"plain": model}, torch.randn(4, 3, 2, 2), TWO_ROUNDS, bf16=["plain"])
    assert set(comparison.raw["arm"]) == {"plain", "plain (A/A copy)"}
    assert comparison.environment["bf16_native"] is False
    columns = bench.bf16_columns(comparison, "plain", 4, 1.0, (0.97, 1.03))
    assert columns["bf16_verdict"] == bench.NOT_MEASURED_NO_BF16 and math.isnan(columns["bf16_speedup_over_fp32"])


def test_bf16_detection_follows_the_device_and_a_bad_override_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset: oneDNN's answer on the CPU (recorded with the vector capability torch dispatches to); 1 / 0 force it;
    anything else is refused in one line naming the value."""
    monkeypatch.delenv("VITSTUDY_BF16", raising=False)
    info = bench.environment_info("cpu")
    assert info["bf16_native"] == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    for value, expected in (("1", True), ("0", False)):
        monkeypatch.setenv("VITSTUDY_BF16", value)
        assert bench.bf16_native("cpu") is expected
    monkeypatch.setenv("VITSTUDY_BF16", "yes")
    with pytest.raises(ValueError, match=r"VITSTUDY_BF16='yes' is not allowed: expected 0 \(never time bf16\)"):
        bench.bf16_native("cpu")


# ----------------------------------------------------------------------------------------------------------
# The manifest

TIMES = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
from vitstudy import bench
bench.machine_peak("cpu", 1, 64, 0.01)
"""

TIMES_NOTHING = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
print("nothing timed")
"""


@pytest.mark.usefixtures("bf16_kernels")
def test_the_manifest_records_the_peak_the_notebook_measured(tmp_path) -> None:
    """The peaks a notebook's kernel measured go into its manifest entry; a notebook that times nothing has none."""
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    notebooks.mkdir()
    (notebooks / "00_times.py").write_text(textwrap.dedent(TIMES))
    (notebooks / "01_quiet.py").write_text(textwrap.dedent(TIMES_NOTHING))
    runner.run_report("smoke", out=out, notebooks=notebooks, log=lambda *a, **k: None)
    entries = json.loads((out / runner.MANIFEST).read_text())["notebooks"]
    peaks = entries["00_times"]["environment"]["machine_peak"]
    assert [(p["device"], p["threads"], p["matmul_size"], p["dtype"]) for p in peaks] == [
        ("cpu", 1, 64, "fp32"),
        ("cpu", 1, 64, "bf16"),
    ]
    assert all(p["gflop_per_s"] > 0 for p in peaks)
    assert entries["01_quiet"]["environment"]["machine_peak"] == []
    assert not (out / runner.PEAK_RECORD).exists()
