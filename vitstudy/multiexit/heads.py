"""Exit heads: record a data set's features at every exit through the frozen backbone once, then fit and evaluate
the heads offline.

Every function here takes a ``MultiExitViT``; the class itself only holds the knobs and the forward.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..config import check
from ..data import make_loader
from ..files import atomic_path
from ..models import forward_start
from .model import MultiExitViT


@dataclass
class ExitFeatures:
    """Pre-logits features of a data set at some exits and after the last block."""

    features: torch.Tensor  # [N, len(exits) + 1, D]; the last column is after the final block
    targets: torch.Tensor  # [N]
    exits: tuple[int, ...]
    depth: int

    def columns(self, exits: Sequence[int]) -> list[int]:
        """Column of each of ``exits`` followed by the final column; the exits must have been recorded."""
        missing = [b for b in exits if b not in self.exits]
        if missing:
            raise ValueError(f"exits {missing} were not recorded: these features hold exits {self.exits}")
        return [self.exits.index(b) for b in exits] + [len(self.exits)]

    def first(self, count: int) -> ExitFeatures:
        """The first ``count`` images' features (e.g. the batch a timing runs on)."""
        return ExitFeatures(self.features[:count], self.targets[:count], self.exits, self.depth)


@torch.inference_mode()
def record_features(model: MultiExitViT, images: torch.Tensor) -> torch.Tensor:
    """Pre-logits features at every exit and after the last block, ``[B, C, H, W] -> [B, exits + 1, D]``."""
    tokens, done, features = forward_start(model.vit, images), 0, []
    for block in model.exits:
        tokens = model.run_blocks(tokens, done, block)
        done = block
        features.append(model.exit_features(tokens))
    features.append(model.final_features(model.run_blocks(tokens, done, model.depth)))
    return torch.stack(features, dim=1)


def record_loader(
    model: MultiExitViT, loader: Iterable, device: str | torch.device = "cpu", progress: bool = False
) -> ExitFeatures:
    """Features at ``model``'s exits and after the last block for every image of ``loader`` (one pass)."""
    model.eval().to(device)
    features, targets = [], []
    for images, labels in tqdm(loader, desc="recording exit features", leave=False, disable=not progress):
        features.append(record_features(model, images.to(device)).float().cpu())
        targets.append(torch.as_tensor(labels))
    return ExitFeatures(torch.cat(features), torch.cat(targets), model.exits, model.depth)


def recorded_features(
    model: MultiExitViT,
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    cache_path: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> ExitFeatures:
    """``record_loader`` over one split, cached at ``cache_path`` when given (a frozen backbone's features
    never change)."""
    if cache_path is not None and cache_path.is_file():
        saved = load_file(str(cache_path))
        return ExitFeatures(saved["features"], saved["targets"], model.exits, model.depth)
    if getattr(dataset, "augment", False):
        # Heads are fitted on the images as the model sees them at test time: no random crop or flip.
        dataset = copy.copy(dataset)
        dataset.augment = False
    loader = make_loader(dataset, batch_size, train=False)
    record = record_loader(model, loader, device, progress)
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            save_file({"features": record.features.contiguous(), "targets": record.targets.contiguous()}, str(tmp))
    return record


def logits_from_features(model: MultiExitViT, features: ExitFeatures) -> torch.Tensor:
    """Logits of every exit and the final output from recorded features: ``[N, exits + 1, classes]``."""
    columns = features.columns(model.exits)
    heads = [*model.exit_heads, model.final_head]
    with torch.inference_mode():
        feats = features.features.to(next(heads[0].parameters()).device)
        return torch.stack([head(feats[:, col]) for head, col in zip(heads, columns)], dim=1).cpu()


def fit_heads(
    model: MultiExitViT,
    train: ExitFeatures,
    epochs: int = 30,
    lr: float = 3e-3,
    batch_size: int = 256,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> pd.DataFrame:
    """Train ``model``'s variant's heads on recorded (frozen-backbone) features; per-epoch loss and top-1 per head.

    ``same`` trains nothing. ``finetune`` / ``scratch`` fit the shared head on every exit's features and the
    final features together; ``separate`` fits each exit's head on its own exit's features. ``joint`` is refused:
    its heads train with the backbone (``multiexit.joint``).
    """
    check(model.variant != "joint", "variant", model.variant, "a variant fitted on frozen features, not 'joint'")
    rows = []
    for name, head, cols in _head_jobs(model, train):
        x = train.features[:, cols].reshape(-1, train.features.shape[-1])  # [N * len(cols), D]
        y = train.targets.repeat_interleave(len(cols))  # row-major: each image's columns are adjacent
        for epoch, loss, top1 in fit_linear(head, x, y, epochs, lr, batch_size, weight_decay, seed):
            rows.append({"head": name, "epoch": epoch, "loss": loss, "train_top1": top1})
    return pd.DataFrame(rows)


def _head_jobs(model: MultiExitViT, train: ExitFeatures) -> list[tuple[str, nn.Linear, list[int]]]:
    """(name, head, the feature columns of ``train`` it is fitted on) of each head ``fit_heads`` trains."""
    if model.variant == "same":
        return []
    columns = train.columns(model.exits)
    if model.variant == "separate":
        return [(f"exit_{b}", head, [col]) for b, head, col in zip(model.exits, model.exit_heads, columns)]
    return [("shared", model.final_head, columns)]


def fitted_heads(
    model: MultiExitViT, train: ExitFeatures, epochs: int, seed: int, cache_path: Path | None = None
) -> pd.DataFrame:
    """``fit_heads``, cached at ``cache_path`` when given: the fitted heads' weights, with their training history
    in the file's metadata. The features of a frozen backbone never change and the fit is seeded, so notebooks
    02, 03, 07 and 10 share one fit instead of each repeating it."""
    jobs = _head_jobs(model, train)
    if cache_path is not None and jobs and cache_path.is_file():
        with safe_open(str(cache_path), "pt") as saved:
            for name, head, _ in jobs:
                head.load_state_dict({key: saved.get_tensor(f"{name}.{key}") for key in head.state_dict()})
            history = saved.metadata()["history"]
        return pd.read_csv(io.StringIO(history))
    history = fit_heads(model, train, epochs=epochs, seed=seed)
    if cache_path is not None and jobs:
        weights = {
            f"{name}.{key}": value.detach().cpu().contiguous().clone()
            for name, head, _ in jobs
            for key, value in head.state_dict().items()
        }
        with atomic_path(cache_path) as tmp:
            save_file(weights, str(tmp), metadata={"history": history.to_csv(index=False)})
    return history


def fit_linear(
    head: nn.Linear,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    seed: int,
) -> list[tuple[int, float, float]]:
    """Train a linear head on features ``x`` ``[N, D]`` with labels ``[N]``: AdamW + cosine, in place.

    Returns ``(epoch, mean loss, top-1 %)`` per epoch. Runs where the head lives; features are small.
    """
    device = head.weight.device
    x, y = x.to(device), y.to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * max(1, -(-len(x) // batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    history = []
    head.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=generator).to(device)
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        for rows in order.split(batch_size):
            logits = head(x[rows])
            loss = F.cross_entropy(logits, y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            totals += torch.stack([loss.detach().double() * len(rows), (logits.argmax(-1) == y[rows]).sum().double()])
        loss_sum, correct = totals.tolist()
        history.append((epoch, loss_sum / len(x), 100 * correct / len(x)))
    head.eval()
    return history
