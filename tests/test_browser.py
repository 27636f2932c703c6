"""JupyterLab in a real browser (Debian's Chromium driven by Playwright): one click opens a notebook, sliders work."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
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


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on notebooks/ with isolated settings, the smoke scale and temporary outputs."""
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium: `apt-get install -y chromium` (make test installs it as root)")
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port, token = _free_port(), "vitstudy-test"
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
        VITSTUDY_SCALE="smoke",
    )
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


def test_quickstart_opens_with_one_click_runs_and_slider_moves(lab, tmp_path):
    """Double-clicking 00_quickstart.py opens a notebook; run-all succeeds; the browser slider updates the view."""
    from playwright.sync_api import sync_playwright

    base, token = lab
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "browser"), executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS
        )
        try:
            page = context.new_page()
            page.goto(f"{base}/lab?token={token}&reset")
            item = page.locator(".jp-DirListing-item", has_text="00_quickstart.py")
            item.wait_for(timeout=60_000)
            item.dblclick()
            page.locator(".jp-NotebookPanel").wait_for(timeout=60_000)
            idle = "window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'"
            page.wait_for_function(idle, timeout=60_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            slider = page.locator(".widget-slider .noUi-handle").first
            slider.wait_for(timeout=120_000)
            page.wait_for_function(idle, timeout=120_000)
            assert (
                page.locator(
                    ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']", has_text="Error"
                ).count()
                == 0
            )
            readout = page.locator(".widget-slider .widget-readout").first
            before = int(readout.inner_text())
            slider.focus()
            slider.press("ArrowRight")
            page.wait_for_function(
                f"document.querySelector('.widget-slider .widget-readout').textContent.trim() === '{before + 24}'",
                timeout=30_000,
            )
            assert page.locator(".jp-OutputArea-output", has_text="Traceback").count() == 0
        finally:
            context.close()
