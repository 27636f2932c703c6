"""JupyterLab in a real browser (Debian's Chromium driven by Playwright): one click opens a notebook, it runs, and
every control of the two explorers (06, 07) shows what the package computes for the setting a user picked.

The helpers below (server, page, run-all, moving a control, asking the kernel) are shared by the tests and by
``tests/widget_latency.py``, which times a move at the quick scale."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Screenshots of the explorers after the test's moves. Tests never write into the project's figures on their own:
# VITSTUDY_SCREENS=figures/screens refreshes the README's screenshots; otherwise they go to a temporary folder.
SCREENS = (
    ROOT / os.environ["VITSTUDY_SCREENS"]
    if os.environ.get("VITSTUDY_SCREENS")
    else Path(tempfile.mkdtemp(prefix="vitstudy-screens-"))
)
IDLE = "window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'"
# every code cell of the open notebook has run (an execution count), and the kernel is idle again
ALL_RAN = (
    "(() => { const panel = window.jupyterapp?.shell.currentWidget; return !!panel?.content?.widgets?.length && "
    "panel.content.widgets.every(c => c.model.type !== 'code' || !c.model.sharedModel.source.trim() || "
    "c.model.executionCount !== null) && panel.sessionContext.session?.kernel?.status === 'idle'; })()"
)
# runs code in the open notebook's kernel (outside any cell) and returns its stdout; errors come back as text
KERNEL_EXEC = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  const out = [];
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') out.push(msg.content.text);
    if (msg.header.msg_type === 'error') out.push('KERNEL ERROR ' + msg.content.ename + ': ' + msg.content.evalue);
  };
  await future.done;
  return out.join('');
}"""


@contextmanager
def jupyter_lab(folder: Path, scale: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on notebooks/ with isolated settings and ``VITSTUDY_SCALE=scale``; yields (base url,
    token). Its kernels are shut down over the REST API and the server stopped by its PID on the way out."""
    settings = folder / "settings" / "@jupyterlab"
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    # No autosave: running a notebook must not rewrite the committed .py file (jupytext would add its metadata).
    (settings / "docmanager-extension").mkdir()
    (settings / "docmanager-extension" / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    # Every cell rendered, not only those in view: a test reads outputs anywhere in the notebook.
    (settings / "notebook-extension").mkdir()
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port, token = _free_port(), "vitstudy-test"
    env = dict(
        os.environ if env is None else env,
        JUPYTER_CONFIG_DIR=str(folder / "config"),
        JUPYTERLAB_SETTINGS_DIR=str(folder / "settings"),
        VITSTUDY_SCALE=scale,
    )
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend, as a user gets it (tests set Agg)
    jupyter = Path(sys.executable).parent / "jupyter"
    server = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--allow-root", "--ip", "127.0.0.1", f"--port={port}",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={ROOT / 'notebooks'}",
         "--LabApp.expose_app_in_browser=True", "--ServerApp.port_retries=0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        yield base, token
    finally:
        try:
            request = urllib.request.Request(f"{base}/api/sessions?token={token}")
            for session in json.loads(urllib.request.urlopen(request, timeout=5).read()):
                delete = urllib.request.Request(f"{base}/api/sessions/{session['id']}?token={token}", method="DELETE")
                urllib.request.urlopen(delete, timeout=5)
        except OSError:
            pass
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def chromium_page(folder: Path) -> Iterator[object]:
    """A page of a headless Debian Chromium (Playwright; never a downloaded browser), large enough for a widget."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(folder / "browser"), executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS,
            viewport={"width": 1600, "height": 1300},
        )  # fmt: skip
        try:
            yield context.new_page()
        finally:
            context.close()


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium: `apt-get install -y chromium` (make test installs it as root)")


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on notebooks/ at the smoke scale, with temporary outputs (conftest's)."""
    _need_chromium()
    with jupyter_lab(tmp_path, "smoke") as server:
        yield server


@pytest.fixture
def page(lab, tmp_path):
    """A browser page on that server."""
    with chromium_page(tmp_path) as page:
        yield page


def open_and_run(page, base: str, token: str, notebook: str, timeout_ms: int = 240_000) -> None:
    """Double-click ``notebook`` in the file browser (one click opens a .py as a notebook), run all cells, wait
    until every cell ran and the kernel is idle, and check that no cell wrote an error."""
    page.goto(f"{base}/lab?token={token}&reset")
    item = page.locator(".jp-DirListing-item", has_text=notebook)
    item.wait_for(timeout=60_000)
    item.dblclick()
    page.locator(".jp-NotebookPanel").wait_for(timeout=60_000)
    page.wait_for_function(IDLE, timeout=60_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(ALL_RAN, timeout=timeout_ms, polling=500)
    assert_no_error_output(page)


def assert_no_error_output(page) -> None:
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    texts = [t for t in errors.all_inner_texts() if "Error" in t or "Traceback" in t]
    assert not texts, f"error output in the notebook: {texts[0][-2000:]}"


def kernel_output(page, code: str) -> str:
    """Run ``code`` in the notebook's kernel and return what it printed (an error fails the test)."""
    out = page.evaluate(KERNEL_EXEC, code)
    assert "KERNEL ERROR" not in out, out
    return out


def control(page, label: str):
    """The explorer's control whose description is exactly ``label``."""
    # the element whose own child is the label: sliders, dropdowns and toggle buttons all render that way
    return page.locator(
        "xpath=//div[contains(@class, 'widget-interact')]"
        f"//div[label[contains(@class, 'widget-label') and normalize-space() = '{label}']]"
    ).first


def press_slider(page, label: str, key: str) -> None:
    """Move a slider by one step with the keyboard on its handle."""
    handle = control(page, label).locator(".noUi-handle")
    handle.focus()
    handle.press(key)


def type_slider(page, label: str, value: object) -> None:
    """Type a value into a slider's readout, as a user does for a precise value."""
    readout = control(page, label).locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in a dropdown, or click it among toggle buttons."""
    widget = control(page, label)
    if widget.locator("select").count():
        widget.locator("select").select_option(label=option)
    else:
        widget.get_by_role("button", name=option, exact=True).click()


def shown_readout(page) -> str:
    texts = page.locator(".widget-interact .jp-OutputArea-output pre").all_inner_texts()
    return next((t.strip() for t in texts if t.strip().startswith("explorer readout")), "")


def wait_for_readout(page, expected: str, timeout_s: float = 60.0) -> float:
    """Wait until the explorer shows ``expected`` (the final text, not an intermediate redraw); returns seconds."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if shown_readout(page) == expected.strip():
            return time.perf_counter() - started
        time.sleep(0.02)
    assert shown_readout(page) == expected.strip(), "the explorer shows something else than the package computes"
    return math.nan


def readout_values(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines()[1:])


def move_and_read(page, move, label, argument, expected: str) -> dict[str, str]:
    """Make one move, wait until the readout equals ``expected`` and a figure image is shown; the readout's values."""
    move(page, label, argument)
    wait_for_readout(page, expected)
    page.locator(".widget-interact .jp-OutputArea-output img").wait_for(timeout=30_000)  # the figure, an image
    return readout_values(shown_readout(page))


def test_quickstart_opens_with_one_click_runs_and_slider_moves(page, lab):
    """Double-clicking 00_quickstart.py opens a notebook; run-all succeeds; the browser slider updates the view."""
    base, token = lab
    open_and_run(page, base, token, "00_quickstart.py")
    readout = page.locator(".widget-slider .widget-readout").first
    before = int(readout.inner_text())
    slider = page.locator(".widget-slider .noUi-handle").first
    slider.focus()
    slider.press("ArrowRight")
    page.wait_for_function(
        f"document.querySelector('.widget-slider .widget-readout').textContent.trim() === '{before + 24}'",
        timeout=30_000,
    )
    assert page.locator(".jp-OutputArea-output", has_text="Traceback").count() == 0


# ----------------------------------------------------------------------------------------------------------
# The two explorers: every control moved to at least two settings, each checked against the package


def skipvit_expected(page, state: dict) -> str:
    """What the package computes for a SkipViT explorer setting, in the kernel, on the notebook's model and images.
    The test states the sliders' meaning itself: second drop 0 = one stage, the skip layer only in mode skip."""
    layers = (state["first_layer"],) if state["second_layer"] == 0 else (state["first_layer"], state["second_layer"])
    skip = state["skip_layer"] if state["mode"] == "skip" else None
    code = (
        "import matplotlib.pyplot as _plt\nfrom vitstudy.widgets import summary_text as _text\n"
        f"_s = skipvit.SkipViTSettings({layers}, {(state['ratio'],) * len(layers)}, {skip}, mode={state['mode']!r})\n"
        f"_v = skipvit.explore(model, images[{state['index']}], _s, classes, labels[{state['index']}])\n"
        "_plt.close(_v.figure)\nprint(_text(_v.summary))"
    )
    return kernel_output(page, code)


def test_patch_drop_explorer_shows_what_skipvit_computes(page, lab):
    """06 in JupyterLab: every slider and the mode selector moved twice; after each move the explorer's kept and
    dropped counts, greyed patches per stage and predictions with dropping on and off equal the package's."""
    base, token = lab
    open_and_run(page, base, token, "06_patch_drop_explorer.py")
    # where the notebook's own last cell left the controls
    state = dict(index=3, first_layer=6, second_layer=0, ratio=0.3, skip_layer=4, mode="skip")
    moves = [
        ("back at block", type_slider, 11, "skip_layer", 11),
        ("back at block", press_slider, "ArrowLeft", "skip_layer", 10),
        ("drop after", type_slider, 4, "first_layer", 4),
        ("drop after", press_slider, "ArrowRight", "first_layer", 5),
        ("2nd drop (0=none)", type_slider, 8, "second_layer", 8),
        ("2nd drop (0=none)", press_slider, "ArrowLeft", "second_layer", 7),
        ("drop ratio", type_slider, 0.5, "ratio", 0.5),
        ("drop ratio", press_slider, "ArrowRight", "ratio", 0.55),
        ("image", type_slider, 0, "index", 0),
        ("image", press_slider, "ArrowRight", "index", 1),
        ("mode", choose, "fused", "mode", "fused"),
        ("mode", choose, "drop", "mode", "drop"),
        ("mode", choose, "skip", "mode", "skip"),
    ]
    for label, move, argument, key, value in moves:
        state[key] = value
        shown = move_and_read(page, move, label, argument, skipvit_expected(page, state))
        kept, dropped = (list(map(int, shown[k].split(", "))) for k in ("kept_per_stage", "dropped_per_stage"))
        greyed = [g.split(", ") if g.strip() else [] for g in shown["greyed_patches_per_stage"].split(" | ")]
        stages = 1 if state["second_layer"] == 0 else 2
        assert len(kept) == len(dropped) == len(greyed) == stages, shown
        assert [len(g) for g in greyed] == [int(shown["patches"]) - k for k in kept], shown
    assert_no_error_output(page)
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.locator(".widget-interact").first.screenshot(path=SCREENS / "06_patch_drop_explorer.png")


def exit_expected(page, state: dict) -> str:
    """What the package computes for an exit explorer setting, in the kernel, on the notebook's study."""
    exits = tuple(int(b) for b in state["exits"].split(","))
    code = (
        "import matplotlib.pyplot as _plt\nfrom vitstudy.widgets import summary_text as _text\n"
        f"_v = multiexit.explore(study, {state['variant']!r}, {exits}, {state['policy']!r}, {state['threshold']}, "
        f"64, {state['start']}, 24)\n_plt.close(_v.figure)\nprint(_text(_v.summary))"
    )
    return kernel_output(page, code)


def test_exit_explorer_shows_what_the_simulation_computes(page, lab):
    """07 in JupyterLab: threshold, variant, exits, policy and first image moved twice each; after each move the
    exit-block histogram, top-1, speed-up and the grid's exit blocks equal the package's for that setting."""
    base, token = lab
    open_and_run(page, base, token, "07_exit_explorer.py")
    state = dict(variant="finetune", exits="3", policy="sample", threshold=0.5, start=24)  # the notebook's last move
    moves = [
        ("threshold", type_slider, 0.8, "threshold", 0.8),
        ("threshold", press_slider, "ArrowRight", "threshold", 0.805),
        ("variant", choose, "separate", "variant", "separate"),
        ("variant", choose, "same", "variant", "same"),
        ("exits after", choose, "3,6,9", "exits", "3,6,9"),
        ("exits after", choose, "6", "exits", "6"),
        ("policy", choose, "batch", "policy", "batch"),
        ("policy", choose, "sample", "policy", "sample"),
        ("first image", press_slider, "ArrowRight", "start", 48),
        ("first image", type_slider, 0, "start", 0),
        ("exits after", choose, "3,6,9", "exits", "3,6,9"),
    ]
    for label, move, argument, key, value in moves:
        state[key] = value
        shown = move_and_read(page, move, label, argument, exit_expected(page, state))
        blocks = [*map(int, state["exits"].split(",")), 12]
        assert abs(sum(float(shown[f"at_{b}_pct"]) for b in blocks) - 100) < 1e-3, shown
        assert len(shown["shown_exit_blocks"].split(", ")) == 24 and shown["first_image"] == str(state["start"])
    assert_no_error_output(page)
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.locator(".widget-interact").first.screenshot(path=SCREENS / "07_exit_explorer.png")
