"""Time from a control move to the updated explorer view, in JupyterLab in a real browser, at the quick scale.

Not a test (a timing is no pass/fail on a shared CPU): run it by hand, after ``make report`` made the quick caches.

    .venv/bin/python tests/widget_latency.py

For each move it waits until the explorer shows the package's numbers for the new setting (the readout text)
AND a new figure image, and records the seconds from the key press or click. Writes
``figures/tables/11_widget_latency.{csv,md}`` (every move) with the machine named in each row.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REPEATS = 3  # each move list runs this often; the first pass includes warm-up effects and is kept (users see it)


def _browser_helpers():
    spec = importlib.util.spec_from_file_location("browser_helpers", HERE / "test_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _image_source(page) -> str:
    images = page.locator(".widget-interact .jp-OutputArea-output img")
    return images.first.get_attribute("src") if images.count() else ""


def _timed_move(tb, page, move, label, argument, expected: str, timeout_s: float = 60.0) -> float:
    """Seconds from the move until the readout equals ``expected`` and a new figure image is shown."""
    before = _image_source(page)
    started = time.perf_counter()
    move(page, label, argument)
    while time.perf_counter() - started < timeout_s:
        if tb.shown_readout(page) == expected.strip() and _image_source(page) not in ("", before):
            return time.perf_counter() - started
        time.sleep(0.01)
    raise TimeoutError(f"{label}: the view did not update within {timeout_s} s")


def measure(tb, page, base: str, token: str) -> list[dict]:
    rows = []
    tb.open_and_run(page, base, token, "06_patch_drop_explorer.py", timeout_ms=900_000)
    state = dict(index=3, first_layer=6, second_layer=0, ratio=0.3, skip_layer=11, mode="skip")
    tb.type_slider(page, "back at block", 11)  # the notebook leaves an invalid setting on purpose
    tb.wait_for_readout(page, tb.skipvit_expected(page, state))
    moves = [("drop ratio", tb.press_slider, "ArrowRight", "ratio", 0.35),
             ("drop after", tb.press_slider, "ArrowLeft", "first_layer", 5),
             ("image", tb.press_slider, "ArrowRight", "index", 4),
             ("mode", tb.choose, "fused", "mode", "fused"),
             ("mode", tb.choose, "skip", "mode", "skip"),
             ("drop ratio", tb.press_slider, "ArrowLeft", "ratio", 0.3),
             ("drop after", tb.press_slider, "ArrowRight", "first_layer", 6),
             ("image", tb.press_slider, "ArrowLeft", "index", 3)]  # fmt: skip
    for repeat in range(REPEATS):
        for label, move, argument, key, value in moves:
            state[key] = value
            expected = tb.skipvit_expected(page, state)
            seconds = _timed_move(tb, page, move, label, argument, expected)
            rows.append(dict(explorer="06_patch_drop_explorer", control=label, move=str(argument), repeat=repeat,
                             seconds=seconds))  # fmt: skip
    tb.open_and_run(page, base, token, "07_exit_explorer.py", timeout_ms=900_000)
    state = dict(variant="finetune", exits="3", policy="sample", threshold=0.5, start=24)
    moves = [("threshold", tb.press_slider, "ArrowRight", "threshold", 0.505),
             ("exits after", tb.choose, "3,6,9", "exits", "3,6,9"),
             ("policy", tb.choose, "batch", "policy", "batch"),
             ("variant", tb.choose, "separate", "variant", "separate"),
             ("first image", tb.press_slider, "ArrowRight", "start", 48),
             ("threshold", tb.press_slider, "ArrowLeft", "threshold", 0.5),
             ("exits after", tb.choose, "3", "exits", "3"),
             ("policy", tb.choose, "sample", "policy", "sample"),
             ("variant", tb.choose, "finetune", "variant", "finetune"),
             ("first image", tb.press_slider, "ArrowLeft", "start", 24)]  # fmt: skip
    for repeat in range(REPEATS):
        for label, move, argument, key, value in moves:
            state[key] = value
            expected = tb.exit_expected(page, state)
            seconds = _timed_move(tb, page, move, label, argument, expected)
            rows.append(dict(explorer="07_exit_explorer", control=label, move=str(argument), repeat=repeat,
                             seconds=seconds))  # fmt: skip
    return rows


def main() -> None:
    import pandas as pd

    from vitstudy.bench import environment_info
    from vitstudy.report import save_table

    tb = _browser_helpers()
    folder = Path(tempfile.mkdtemp(prefix="widget-latency-"))
    env = dict(os.environ, VITSTUDY_OUT=str(folder / "figures"))  # the notebooks' own figures stay out of figures/
    with tb.jupyter_lab(folder, "quick", env) as (base, token), tb.chromium_page(folder) as page:
        rows = measure(tb, page, base, token)
    info = environment_info("cpu")
    # other processes on a shared 2-core VM move every timing: the 1-minute load average says how busy it was
    frame = pd.DataFrame(rows).assign(scale="quick", machine=f"{info['device_name']}, {info['cpu_threads']} threads",
                                      torch=info["torch"], load_average=round(os.getloadavg()[0], 2))  # fmt: skip
    save_table(frame, "11_widget_latency", out=ROOT / "figures", floatfmt=".3f")
    for explorer, group in frame.groupby("explorer"):
        seconds = group["seconds"]
        print(f"{explorer}: median {statistics.median(seconds):.3f} s, max {seconds.max():.3f} s over {len(seconds)}")


if __name__ == "__main__":
    sys.exit(main())
