"""JupyterLab in a real browser (Debian's Chromium driven by Playwright, never a downloaded browser): start a server
on the notebooks, open one with a double click and run it, move an explorer's controls as a user does, and ask the
notebook's kernel what the package computes for a setting. Shared by the browser tests (``tests/tools/test_browser.py``)
and the hand-run :mod:`vitstudy.measure.widget_latency`; needs the ``test`` extra (playwright).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..files import project_root


class BrowserCheckFailed(AssertionError):
    """What the browser shows is not what it should: an error output, a kernel error, another readout."""


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        [
            str(jupyter),
            "lab",
            "--no-browser",
            "--allow-root",
            "--ip",
            "127.0.0.1",
            f"--port={port}",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={project_root() / 'notebooks'}",
            "--LabApp.expose_app_in_browser=True",
            "--ServerApp.port_retries=0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
    # Imported here: playwright is the `test` extra's, and only a browser run needs it.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(folder / "browser"),
            executable_path=CHROMIUM,
            headless=True,
            args=BROWSER_ARGS,
            viewport={"width": 1600, "height": 1300},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


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
    """Raise :class:`BrowserCheckFailed` with the first error or traceback a cell wrote."""
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    texts = [t for t in errors.all_inner_texts() if "Error" in t or "Traceback" in t]
    if texts:
        raise BrowserCheckFailed(f"error output in the notebook: {texts[0][-2000:]}")


def kernel_output(page, code: str) -> str:
    """Run ``code`` in the notebook's kernel and return what it printed (an error raises)."""
    out = page.evaluate(KERNEL_EXEC, code)
    if "KERNEL ERROR" in out:
        raise BrowserCheckFailed(out)
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


FIGURE_IMAGES = ".widget-interact img.vitstudy-figure"  # an explorer's figure: its image widget (widgets.FIGURE_CLASS)
# where an explorer keeps its summary as JSON (``widgets.readout_data``), hidden from view, and its sentences
READOUT_DATA = ".widget-interact .vitstudy-readout-data .widget-html-content"
READOUT = ".widget-interact .vitstudy-readout .widget-html-content"


def shown_data(page) -> str:
    """The explorer's summary as JSON (``widgets.readout_data``) in its hidden element, or "" while there is none."""
    element = page.locator(READOUT_DATA)
    return (element.first.text_content() or "").strip() if element.count() else ""


def shown_sentences(page) -> str:
    """The explorer's readout sentences as a person sees them under the figure."""
    return page.locator(READOUT).first.inner_text().strip()


def cut_labels(page) -> list[str]:
    """The explorer's control labels that do not fit their box (the browser cuts them with an ellipsis)."""
    return page.locator(".widget-interact .widget-label").evaluate_all(
        "labels => labels.filter(l => l.offsetWidth && l.scrollWidth > l.clientWidth).map(l => l.textContent)"
    )


def wait_for_data(page, expected: str, timeout_s: float = 60.0) -> float:
    """Wait until the explorer holds ``expected`` (the final summary, not an intermediate redraw); returns seconds."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if shown_data(page) == expected.strip():
            return time.perf_counter() - started
        time.sleep(0.02)
    if shown_data(page) != expected.strip():
        raise BrowserCheckFailed("the explorer shows something else than the package computes")
    return math.nan


def view_data(page, explore_call: str) -> str:
    """The summary JSON of the explorer view that ``explore_call`` (Python, run in the notebook's kernel against its
    variables) returns: what the package computes for a setting. The view's figure is closed unseen."""
    code = (
        "import matplotlib.pyplot as _plt\nfrom vitstudy.widgets import readout_data as _data\n"
        f"_v = {explore_call}\n_plt.close(_v.figure)\nprint(_data(_v.summary))"
    )
    return kernel_output(page, code)


def skipvit_expected(page, state: dict) -> str:
    """Notebook 06's view for a SkipViT explorer setting, on its model and images. The sliders' meaning is stated
    here on purpose: second drop 0 = one stage, the skip layer only in mode skip."""
    layers = (state["first_layer"],) if state["second_layer"] == 0 else (state["first_layer"], state["second_layer"])
    skip = state["skip_layer"] if state["mode"] == "skip" else None
    settings = f"skipvit.SkipViTSettings({layers}, {(state['ratio'],) * len(layers)}, {skip}, mode={state['mode']!r})"
    index = state["index"]
    return view_data(page, f"skipvit.explore(model, images[{index}], {settings}, classes, labels[{index}])")


def exit_expected(page, state: dict) -> str:
    """Notebook 07's view for an exit explorer setting, on its study."""
    exits = tuple(int(b) for b in state["exits"].split(","))
    return view_data(
        page,
        f"multiexit.explore(study, {state['variant']!r}, {exits}, {state['policy']!r}, "
        f"{state['threshold']}, 64, {state['start']}, 24)",
    )


# In-page timing of one move, so that the driver's own round trips (Playwright finding a control, polling the page)
# are not counted: armed before the move, the page notes the time stamp of the first input event (a key, a click, a
# dropdown choice) and the first moment after it when the explorer's hidden summary reads `expected` and its figure
# image has a new source, decoded and ready to paint. Both are `performance.now()` times of the page.
ARM_MOVE_TIMER = """(expected) => {
  const root = document.querySelector('.widget-interact');
  const image = () => root.querySelector('img.vitstudy-figure');
  const data = () => root.querySelector('.vitstudy-readout-data .widget-html-content');
  const timer = {started: null, shown: null, source: image()?.src ?? ''};
  const onInput = (event) => { if (timer.started === null) timer.started = event.timeStamp; };
  const events = ['keydown', 'mousedown', 'input', 'change'];
  for (const name of events) document.addEventListener(name, onInput, true);
  const check = async () => {
    const shown = image();
    if (timer.started === null || timer.shown !== null || !shown || shown.src === timer.source) return;
    if ((data()?.textContent ?? '').trim() !== expected) return;
    const source = shown.src;
    try { await shown.decode(); } catch (err) { return; }  // a source replaced while decoding: a later check
    if (shown.src !== source || timer.shown !== null) return;
    timer.shown = performance.now();
    observer.disconnect();
    for (const name of events) document.removeEventListener(name, onInput, true);
  };
  const observer = new MutationObserver(check);
  observer.observe(root, {subtree: true, childList: true, characterData: true, attributes: true});
  window.vitstudyMoveTimer = timer;
}"""
MOVE_SHOWN = "window.vitstudyMoveTimer && window.vitstudyMoveTimer.shown !== null"


def arm_move_timer(page, expected: str) -> None:
    """Start timing the next move in the page (:data:`ARM_MOVE_TIMER`): it ends when the first explorer shows
    ``expected`` (its summary JSON) and a new figure image."""
    page.evaluate(ARM_MOVE_TIMER, expected.strip())


def move_seconds(page, timeout_s: float) -> float:
    """Seconds from the armed move's input event to its view shown, as the page measured them."""
    page.wait_for_function(MOVE_SHOWN, timeout=timeout_s * 1000, polling=10)
    timer = page.evaluate("window.vitstudyMoveTimer")
    return (timer["shown"] - timer["started"]) / 1000


def screenshot_explorer(page, path: Path) -> None:
    """A PNG of the page's first explorer (its controls, figure and readout) at ``path``: the README's screenshots."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.locator(".widget-interact").first.screenshot(path=path)
