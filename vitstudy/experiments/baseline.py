"""Notebook 00: the default baseline every later notebook starts from — its data, its accuracy, its inference speed.

Training and evaluation are the shared :mod:`vitstudy.train`; what is the notebook's own lives here: its budget
(how hard the inference speed is timed per scale), the sample images, the speed table (the baseline against its
A/A copy, by :func:`vitstudy.bench.compare_models`) and the summary row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import bench
from ..cluttered import item_tokens, load_cluttered_arrays
from ..config import Scale, scale_budget
from ..data import ArrayImageDataset
from ..fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist_arrays
from ..train import TrainResult
from .sentences import measured, number, paragraph

BASELINE = "baseline"  # the timed arm; its A/A copy is bench.control_arm(BASELINE)


@dataclass(frozen=True)
class BaselineBudget:
    """How notebook 00 times its baseline and pages its predictions at one scale."""

    scale: str
    timing: bench.CompareSettings  # the inference forward of one evaluation batch, against its A/A copy
    page_size: int = 24  # images per page of the prediction browser: three rows of eight


BUDGETS: dict[str, BaselineBudget] = {
    # The smoke timing of every experiment, without the warm-up calls (other smoke timings run that loop).
    # and a page of one row: every page is drawn as a figure.
    "smoke": BaselineBudget("smoke", dataclasses.replace(bench.SMOKE_TIMING, warmup_calls=0), page_size=8),
    # A batch of 256 takes ~0.4 s on a 2-core CPU: two or three calls per arm and round, ~15 s in all.
    "quick": BaselineBudget("quick", bench.CompareSettings(rounds=6, min_run_time=0.3, warmup_calls=1)),
    "full": BaselineBudget("full", bench.CompareSettings(rounds=12, min_run_time=0.6)),
    "paper": BaselineBudget("paper", bench.CompareSettings(rounds=12, min_run_time=0.6)),
}


def budget(scale: Scale | str | None = None) -> BaselineBudget:
    """Notebook 00's budget at ``scale`` (default ``VITSTUDY_SCALE``; :func:`vitstudy.config.scale_budget`)."""
    return scale_budget(BUDGETS, scale)


def class_examples(dataset: ArrayImageDataset, per_class: int = 3) -> tuple[torch.Tensor, list[str]]:
    """The first ``per_class`` images of every class, ordered so that a grid with one column per class works."""
    by_class = [torch.nonzero(dataset.targets == k)[:per_class, 0].tolist() for k in range(len(dataset.classes))]
    order = [indices[r] for r in range(per_class) for indices in by_class if r < len(indices)]  # row r: r-th of each
    images = torch.stack([dataset[i][0] for i in order])
    return images, [dataset.classes[int(dataset.targets[i])] for i in order]


def cluttered_examples(per_class: int = 2) -> tuple[torch.Tensor, list[str]]:
    """The first ``per_class`` test canvases of every class of cluttered Fashion-MNIST (notebook 08's second data
    set, :mod:`vitstudy.cluttered`), titled with the class and how many of the 49 tokens carry part of the item."""
    canvases, labels, corners = load_cluttered_arrays("test")
    on_item = item_tokens(torch.from_numpy(load_fashion_mnist_arrays("test")[0]), torch.from_numpy(corners))
    by_class = [np.flatnonzero(labels == k)[:per_class] for k in range(len(FASHION_MNIST_CLASSES))]
    order = [indices[r] for r in range(per_class) for indices in by_class if r < len(indices)]
    titles = [f"{FASHION_MNIST_CLASSES[labels[i]]}\nitem on {int(on_item[i].sum())}/49" for i in order]
    return torch.from_numpy(canvases[order]), titles


def inference_speed(
    model: torch.nn.Module, images: torch.Tensor, chosen: BaselineBudget, device: str | torch.device | None = None
) -> bench.Comparison:
    """One inference forward of ``model`` on ``images`` [B, C, H, W], timed against its A/A copy on ``device``
    (default: the GPU when there is one). The model ends on the CPU."""
    device = device or bench.default_device()
    return bench.compare_models({BASELINE: model}, images, chosen.timing, device, baseline=BASELINE)


def speed_table(comparison: bench.Comparison, images: int) -> pd.DataFrame:
    """The baseline's and its A/A copy's rows (images/s, speed-up with its 95% interval, verdict), the protocol
    and the note. ``images`` is the batch one timed call processes."""
    # The baseline's own row is judged "baseline" whatever the target; the A/A row against 1.00 ± 3%.
    rows = [
        {"arm": BASELINE, **bench.speed_row(comparison, BASELINE, images, 1.0, (1.0, 1.0))},
        {"arm": comparison.control, **bench.control_row(comparison, images)},
    ]
    return pd.DataFrame(rows).assign(**bench.protocol(comparison), batch_size=images, note=bench.table_note(comparison))


def summary_table(scale: str, result: TrainResult, speed: pd.DataFrame) -> pd.DataFrame:
    """One row: the scale, the trained baseline's summary and its inference images/s (from ``speed``)."""
    images_per_s = speed.loc[speed["arm"] == BASELINE, "images_per_s"].item()
    return pd.DataFrame([{"scale": scale, **result.summary(), "inference_im_s": images_per_s}])


def mistakes_page(predictions: np.ndarray, targets: np.ndarray, page_size: int) -> int:
    """The first image of the second page of mistakes when there is one, else 0: where the notebook moves the
    prediction browser to check its callbacks."""
    return page_size if (predictions != targets).sum() > page_size else 0


def findings(summary: pd.DataFrame, speed: pd.DataFrame) -> str:
    """What notebook 00 shows, in a few sentences computed from its summary and speed tables (Markdown): top-1,
    images/s and whether the A/A control (by its interval, :func:`vitstudy.bench.table_trust`) lets later speed-ups
    on this machine be read."""
    top1 = summary["test_top1"].iloc[0] if len(summary) else float("nan")
    rows = speed.set_index("arm")
    plain = rows.loc[BASELINE].to_dict() if BASELINE in rows.index else {}
    control = rows.iloc[-1].to_dict() if len(rows) > 1 else {}
    trust = bench.table_trust(speed)
    control_sentence = (
        f"Its A/A control (the model against an identical copy) is {trust}: this run's timings on this machine are "
        "not to be read as speed-ups."
        if trust
        else f"Its A/A control (the model against an identical copy) reads {measured(control, unit='×')}, inside "
        f"1.00 ± {bench.CONTROL_TOLERANCE:.0%}: a later speed-up is resolved when it differs from 1.00 by more than "
        "that interval."
    )
    return paragraph(
        [
            "How accurate and how fast is the baseline every later notebook starts from?",
            f"It reaches a test top-1 of {number(top1, unit=' %')} and runs "
            f"{number(plain.get('images_per_s'), digits=0)} images/s at inference on "
            f"{plain.get('device', 'this device')}.",
            control_sentence,
            "The papers give no number for this model: it is ours, trained once at the scale printed above.",
        ]
    )
