"""`make lab` starts JupyterLab, as root too (Jupyter refuses root unless told it may)."""

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STARTUP_S = 120.0  # a cold JupyterLab on a busy machine answers within this
POLL_S = 0.5


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect (to the login page) is an answer, not a 200: it is not followed."""

    def redirect_request(self, *args, **kwargs):
        return None


def _status(url: str) -> int | None:
    """The HTTP status ``url`` answers, or None while nothing listens."""
    try:
        with urllib.request.build_opener(_NoRedirect).open(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.mark.slow(seconds=25)
def test_make_lab_serves_jupyterlab(tmp_path):
    """`make lab` (set-up and data taken as done, no browser) serves /lab with 200, whoever runs it."""
    port, token = _free_port(), "vitstudy-test"
    command = ["make", "--no-print-directory", "-o", "install", "-o", "data", "lab", f"PORT={port}"]
    environment = {**os.environ, "JUPYTER_TOKEN": token, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = tmp_path / "lab.log"
    with log.open("w") as sink:
        # its own session: the server (make's child) is stopped with make, as one process group
        lab = subprocess.Popen(
            [*command, "LAB_ARGS=--no-browser"],
            cwd=ROOT,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline, status = time.monotonic() + STARTUP_S, None
        while status != 200 and lab.poll() is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
            status = _status(f"http://127.0.0.1:{port}/lab?token={token}")
        assert status == 200, f"/lab answered {status}; make exited {lab.poll()}: {log.read_text()[-2000:]}"
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGTERM)
            try:
                lab.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(lab.pid, signal.SIGKILL)
                lab.wait()
