"""The paper's first open question, measured: how much activation memory does token dropping save in training?

What a training step keeps for backward is counted exactly, on any device, with
``torch.autograd.graph.saved_tensors_hooks``: every tensor autograd saves during the forward (loss included) is
seen once; tensors that share a storage (views, the same tensor saved by two operators) are counted once, by
their storage's size, and the model's parameters (saved by every linear layer) are left out — they are not
activations and do not change with dropping. On CUDA the step's ``torch.cuda.max_memory_allocated`` (weights,
gradients, optimizer state and transient buffers included) is recorded too; elsewhere it is NaN with a note.
Beside both, the FLOP-ideal speed-up of the same row: whether memory shrinks like compute.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .. import bench
from ..config import check
from ..models import create_model
from .patch import apply_skipvit, configure, dropping, flop_gain
from .settings import BASELINE, PRESETS, SkipViTSettings

NOT_MEASURED = "not measured (no CUDA device)"
MIB = 2**20


def saved_activation_bytes(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> int:
    """Bytes autograd keeps for backward in one training forward of ``model`` on images [B, C, H, W] with a
    cross-entropy loss on targets [B]: distinct storages of saved tensors, parameters excluded."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[tuple[str, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = (str(tensor.device), storage.data_ptr())
        if storage.data_ptr() not in parameters and storage.nbytes():
            storages[key] = max(storages.get(key, 0), storage.nbytes())
        return tensor  # kept by the graph until backward, so no other saved tensor can reuse its address

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = F.cross_entropy(model(images), targets)
    del loss  # frees the graph and what it saved
    return sum(storages.values())


def cuda_peak_bytes(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> float:
    """``max_memory_allocated`` over one training step (forward, backward, AdamW) on CUDA; NaN elsewhere."""
    if images.device.type != "cuda":
        return math.nan
    optimizer = torch.optim.AdamW(model.parameters())
    torch.cuda.synchronize(images.device)
    torch.cuda.reset_peak_memory_stats(images.device)
    F.cross_entropy(model(images), targets).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize(images.device)
    return float(torch.cuda.max_memory_allocated(images.device))


def memory_rows(
    model_name: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    rows: dict[str, SkipViTSettings],
    batch_size: int = 2,
    device: str | None = None,
    seed: int = 0,
    **model_kwargs: Any,
) -> pd.DataFrame:
    """Per row: activation MiB per image saved for backward with dropping off and on, the saving, the
    FLOP-ideal speed-up beside it, and the CUDA peak of a whole step (NaN + note without CUDA)."""
    check(batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
    device = torch.device(device or bench.default_device())
    if not bench.device_available(device):
        device = torch.device("cpu")  # saved bytes do not depend on the device: count them on the CPU
    torch.manual_seed(seed)
    model = apply_skipvit(create_model(model_name, num_classes=num_classes, **model_kwargs)).to(device)
    images = torch.randn(batch_size, *input_size, device=device)
    targets = torch.randint(0, num_classes, (batch_size,), device=device)
    flops_off = bench.flops_per_image(configure(model, BASELINE), input_size)
    with dropping(model, False):
        saved_off = saved_activation_bytes(model, images, targets) / batch_size
        peak_off = cuda_peak_bytes(model, images, targets) / batch_size
    out = []
    for name, settings in rows.items():
        configure(model, settings)
        saved_on = saved_activation_bytes(model, images, targets) / batch_size
        peak_on = cuda_peak_bytes(model, images, targets) / batch_size
        gain = flop_gain(model, input_size, flops_off)
        out.append({
            "model": model_name, "input": "x".join(map(str, input_size)), "row": name, "setting": settings.label,
            "batch_size": batch_size,
            "saved_mib_per_image_off": saved_off / MIB, "saved_mib_per_image_on": saved_on / MIB,
            "saved_ratio": saved_off / saved_on, "memory_saving_pct": 100 * (1 - saved_on / saved_off),
            "ideal_speedup": 1 + gain["ideal_gain_pct"] / 100,
            "cuda_peak_mib_per_image_off": peak_off / MIB, "cuda_peak_mib_per_image_on": peak_on / MIB,
            "device": str(device), "note": "" if device.type == "cuda" else NOT_MEASURED,
        })  # fmt: skip
    return pd.DataFrame(out)


def memory_table(
    paper_model: str = "vit_small_patch16_224",
    paper_input: tuple[int, int, int] = (3, 224, 224),
    small_model: str = "vitstudy_tiny_patch4_28",
    rows: dict[str, SkipViTSettings] | None = None,
    batch_size: int = 2,
    device: str | None = None,
) -> pd.DataFrame:
    """Every Table 1 row (and plain dropping) on the paper's model at its resolution and on the small model."""
    rows = rows if rows is not None else {n: s for n, s in PRESETS.items() if n != "baseline"}
    return pd.concat([
        memory_rows(paper_model, paper_input, 1000, rows, batch_size, device, img_size=paper_input[-1]),
        memory_rows(small_model, (1, 28, 28), 10, rows, batch_size, device),
    ], ignore_index=True)  # fmt: skip
