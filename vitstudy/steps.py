"""One step of each kind, shared by the training loop, every timed training arm and every evaluation: a training
step, a training step on a fixed random batch (what a timed arm runs), an evaluation pass over a (sharded) loader,
predictions, per-class accuracy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .distributed import Dist, all_reduce_sum


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One plain training step: forward, cross-entropy, backward, optimizer step; returns the (detached) loss.

    The step every timed training arm and every memory probe runs. Gradients are freed at the end, not the start:
    when arms are timed in turn, no arm holds gradients while another runs. ``autocast_dtype`` (bf16 arms) runs
    the forward and the loss under ``torch.autocast``; the backward runs outside it, as torch recommends.
    """
    with autocast(images.device, autocast_dtype is not None, autocast_dtype):
        loss = nn.functional.cross_entropy(model(images), targets)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def random_batch_step(
    model: nn.Module,
    batch_size: int,
    input_size: tuple[int, int, int],
    num_classes: int,
    device: str | torch.device = "cpu",
    optimizer_factory: Callable[..., torch.optim.Optimizer] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Callable[[], torch.Tensor]:
    """A no-argument :func:`training_step` of ``model`` (train mode, on ``device``, AdamW unless
    ``optimizer_factory``, under ``autocast_dtype`` if given) on one fixed random batch: a step's cost does not
    depend on the values, and no loader time is timed. This trains the model it is given: pass a
    ``copy.deepcopy`` to keep the original."""
    model.to(device).train()
    optimizer = (optimizer_factory or torch.optim.AdamW)(model.parameters())
    images = torch.randn(batch_size, *input_size, device=device)
    targets = torch.randint(0, num_classes, (batch_size,), device=device)
    return lambda: training_step(model, optimizer, images, targets, autocast_dtype)


def autocast(device: torch.device, enabled: bool, dtype: torch.dtype | None = None):
    """bf16 (else fp16) autocast on CUDA when ``enabled``; nothing elsewhere (the CPU trains in fp32). With
    ``dtype`` (the bf16 timing arms), autocast to it on any device."""
    if enabled and dtype is not None:
        return torch.autocast(device.type, dtype=dtype)
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    world: Dist | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy over a (possibly sharded) loader."""
    world = world or Dist(device=device)
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # [loss sum, correct, count]
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
        totals[0] += nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        totals[1] += (logits.argmax(-1) == targets).sum()
        totals[2] += len(targets)
    loss_sum, correct, count = all_reduce_sum(totals, world).tolist()
    count = max(count, 1.0)
    return {"loss": loss_sum / count, "top1": 100.0 * correct / count}


@torch.inference_mode()
def predict(model: nn.Module, loader: torch.utils.data.DataLoader, device: str | torch.device = "cpu"):
    """Predicted classes and targets over a loader, as numpy arrays (for confusion matrices)."""
    model.eval()
    predictions, targets = [], []
    for images, labels in loader:
        predictions.append(model(images.to(device)).argmax(-1).cpu())
        targets.append(labels)
    return torch.cat(predictions).numpy(), torch.cat(targets).numpy()


def per_class_accuracy(predictions: np.ndarray, targets: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """One row per class: its name, its number of images in ``targets`` and top-1 (%) on them (NaN if none)."""
    predictions, targets = np.asarray(predictions), np.asarray(targets)
    counts = np.bincount(targets, minlength=len(classes))
    correct = np.bincount(targets[predictions == targets], minlength=len(classes))
    with np.errstate(invalid="ignore"):  # a class without images: 0 / 0 is NaN, not a warning
        top1 = 100 * (correct / counts)
    return pd.DataFrame({"class": list(classes), "test_images": counts, "top1": top1})
