"""What token dropping saves: forward FLOPs (the FLOP-ideal speed-up every measured one is set beside) and the
activation memory a training step keeps for backward.

The memory is counted exactly, on any device, with ``torch.autograd.graph.saved_tensors_hooks``: every tensor
autograd saves during the forward (loss included) is seen once; tensors that share a storage (views, the same
tensor saved by two operators) are counted once, by their storage's size, and the model's parameters (saved by
every linear layer) are left out — they are not activations and do not change with dropping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..bench import flops_per_image
from .patch import dropping


def flop_gain(model: nn.Module, input_size: tuple[int, int, int], flops_off: float | None = None) -> dict[str, float]:
    """Forward FLOPs per image with dropping off and on, and the FLOP-ideal throughput gain (%).

    ``flops_off`` skips counting the dropping-off model again (it is the same for every setting of one model).
    """
    with dropping(model, False):
        off = flops_per_image(model, input_size) if flops_off is None else flops_off
    with dropping(model, True):
        on = flops_per_image(model, input_size)
    return {"gflops_off": off / 1e9, "gflops_on": on / 1e9, "ideal_gain_pct": 100 * (off / on - 1)}


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
