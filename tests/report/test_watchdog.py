"""The report cannot wait for ever on a cell: a lost reply is recovered, a kernel that answers nothing fails in one
line naming the notebook and the cell. Faults are injected by a client that drops what the kernel sends."""

import textwrap

import pytest

from vitstudy.report import execute, runner

# A widget cell between two others; plain ipywidgets (what the package's widgets display), so the kernel never
# imports torch: the faults are in the messages, not in what the cell computes.
WIDGET_CELL = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
import ipywidgets
import pandas as pd
from IPython.display import display
from vitstudy import report
# %%
browser = ipywidgets.interactive(lambda start: print(start), start=ipywidgets.IntSlider(0, 0, 9))  # DROP
display(browser)
# %%
report.save_table(pd.DataFrame({"after": [1]}), "07_after")
"""

# A cell with periodic progress lines (and tqdm's widget bar), then a widget cell: the shape of notebook 00's hang.
LONG_THEN_WIDGET = """
# %% tags=["parameters"]
SCALE = "quick"
# %%
import time
from tqdm.auto import tqdm
from vitstudy import progress
for step in tqdm(range(40), desc="epoch 1/1", leave=False):
    time.sleep(0.05)
    if step % 10 == 9:
        progress.emit(f"step {step + 1}/40")
# %%
import pandas as pd
import torch
from vitstudy import report, widgets
images = [(torch.rand(1, 28, 28), i % 10) for i in range(30)]
targets = torch.tensor([label for _, label in images])
predictions = (targets + (torch.arange(30) % 7 == 0)) % 10
browser = widgets.prediction_browser(images, predictions, targets, [str(i) for i in range(10)], count=12)
# %%
widgets.set_controls(browser, {"only_errors": True, "start": 0})
report.save_table(pd.DataFrame({"errors": [int((predictions != targets).sum())]}), "07_browser")
"""


class DroppingClient(execute.WatchdogClient):
    """Drops, for the cell marked ``# DROP``, its reply (``reply``), also its IOPub messages (``cell``), or every
    shell message and everything about the probes too (``everything``); ``final`` drops the last kernel_info reply."""

    reply_grace_s, quiet_s, stuck_s = 1.0, 1.0, 3.0
    fault = "reply"
    target: str | None = None
    after_cells = False

    async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):
        if "# DROP" in cell.source:
            self.target = parent_msg_id
        return await super()._async_poll_output_msg(parent_msg_id, cell, cell_index)

    def papermill_execute_cells(self):
        super().papermill_execute_cells()
        self.after_cells = True

    async def _receive(self, channel):
        msg = await super()._receive(channel)
        if msg is None:
            return None
        parent, shell = msg["parent_header"].get("msg_id"), channel is self.kc.shell_channel
        dropped = {
            "reply": shell and parent == self.target,
            "cell": parent == self.target,
            "everything": self.target is not None and (shell or parent == self.target or parent in self.probes),
            "final": shell and self.after_cells,
        }[self.fault]
        return None if dropped else msg


def _run(tmp_path, monkeypatch, fault=None, source=WIDGET_CELL, name="07_widget"):
    if fault is not None:
        monkeypatch.setattr(DroppingClient, "fault", fault)
        monkeypatch.setattr(execute.WatchdogEngine, "client_class", DroppingClient)
    notebooks, out = tmp_path / "nb", tmp_path / "out"
    notebooks.mkdir()
    (notebooks / f"{name}.py").write_text(textwrap.dedent(source))
    lines = []
    runner.run_report("smoke", out=out, notebooks=notebooks, log=lambda *a, **k: lines.append(a[0]))
    return out, lines


def test_lost_reply_of_a_widget_cell_is_recovered(tmp_path, monkeypatch):
    """A widget cell whose reply is lost ends from its IOPub idle: one line names notebook and cell, the run goes on."""
    out, lines = _run(tmp_path, monkeypatch, "reply")
    said = [line for line in lines if "reply was lost" in line]
    assert len(said) == 1 and "07_widget.py cell index 4 (browser = ipywidgets.interactive(" in said[0]
    assert (out / "tables" / "07_after.csv").is_file()


def test_cell_that_never_ends_fails_once_a_later_request_is_answered(tmp_path, monkeypatch):
    """Reply and IOPub idle both lost: the probe's answer proves it, and the run fails naming notebook and cell."""
    with pytest.raises(runner.NotebookFailed, match=r"^notebook 07_widget.py cell index 4 \(browser = .*never ended"):
        _run(tmp_path, monkeypatch, "cell")


def test_idle_kernel_that_answers_nothing_fails_in_one_line(tmp_path, monkeypatch):
    """A kernel that stays idle and answers neither the cell nor any probe fails the run, naming notebook and cell."""
    with pytest.raises(runner.NotebookFailed, match=r"07_widget.py cell index 4 .*idle and has answered nothing") as e:
        _run(tmp_path, monkeypatch, "everything")
    assert "\n" not in str(e.value)


def test_unanswered_kernel_info_after_the_last_cell_fails(tmp_path, monkeypatch):
    """papermill's kernel_info after the last cell is waited for a bounded time, then the run fails naming it."""
    with pytest.raises(runner.NotebookFailed, match="07_widget.py: no answer to kernel_info after the last cell"):
        _run(tmp_path, monkeypatch, "final")


def test_long_cell_with_progress_then_widget_cell_completes(tmp_path, monkeypatch):
    """The hang's shape (a cell printing progress for a while under tqdm, then a widget cell) runs to the end."""
    out, lines = _run(tmp_path, monkeypatch, source=LONG_THEN_WIDGET, name="07_browser")
    assert [line.split("| ")[1] for line in lines if "| step " in line] == [f"step {n}/40" for n in (10, 20, 30, 40)]
    assert (out / "tables" / "07_browser.csv").is_file() and not any("lost" in line for line in lines)
