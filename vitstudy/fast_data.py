"""The fast training path: an in-memory data set batched on its device, with no per-image Python work.

A :class:`TensorLoader` keeps the uint8 images and labels of an :class:`~vitstudy.data.ArrayImageDataset`
(Fashion-MNIST, digits) on the training device — the GPU when there is one — and builds each batch with a few
tensor operations: gather by index, crop and flip by index arithmetic, convert, normalise. No worker processes
(on a 2-core machine they compete with the compute threads), no collation of single images.

Its batches equal the DataLoader path's (:func:`vitstudy.data.make_loader`) for the same seed and epoch, value
for value: the same shuffled order (DistributedSampler's ``randperm`` of ``seed + epoch``, the same rank
shard and dropped tail) and the same crops and flips (one table per epoch, :func:`~vitstudy.data.crop_flip_params`,
indexed by image number). ``tests/test_fast_data.py`` checks it; whether it is faster is a hand-run measurement,
:mod:`vitstudy.measure.loader_speed`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .config import LOADERS, check_choice
from .data import ArrayImageDataset, crop_flip, crop_flip_params, make_loader


class TensorOrder:
    """The image order of one process per epoch, as a tensor: DistributedSampler's for training (shuffled by
    ``seed + epoch``, tail dropped to a multiple of ``world_size``), every ``world_size``-th image otherwise."""

    def __init__(self, length: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.shuffle:
            return self.length // self.world_size
        return len(range(self.rank, self.length, self.world_size))

    def indices(self) -> torch.Tensor:
        """Image numbers [n] this process visits this epoch, in order (int64, CPU)."""
        if not self.shuffle:
            return torch.arange(self.rank, self.length, self.world_size)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)  # DistributedSampler's draw
        order = torch.randperm(self.length, generator=generator)
        total = self.length // self.world_size * self.world_size
        return order[:total][self.rank :: self.world_size]


class TensorLoader:
    """Batches ``(images [B, 1, H, W] float32 normalised, labels [B] int64)`` of an ArrayImageDataset, made on
    ``device``. ``train``: shuffled, augmented like the data set, incomplete last batch dropped (as the DataLoader
    path); otherwise in order with every image. ``loader.sampler.set_epoch(e)`` picks the epoch, as for a
    DataLoader."""

    def __init__(
        self,
        dataset: ArrayImageDataset,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(dataset, ArrayImageDataset):
            raise TypeError(f"TensorLoader needs an in-memory ArrayImageDataset, not {type(dataset).__name__}")
        self.dataset, self.batch_size, self.train = dataset, batch_size, train
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)  # [N, H, W] uint8: a quarter of float32's memory
        self.targets = dataset.targets.to(self.device)
        self.sampler = TensorOrder(len(dataset), shuffle=train, seed=seed, rank=rank, world_size=world_size)
        self.augment = train and dataset.augment

    def __len__(self) -> int:
        count = len(self.sampler)
        return count // self.batch_size if self.train else -(-count // self.batch_size)  # ceil: keep every image

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.sampler.indices().to(self.device)
        if self.augment:
            offsets, flips = crop_flip_params(
                len(self.dataset), self.dataset.pad, self.dataset.seed, self.sampler.epoch
            )
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        stop = len(order) - len(order) % self.batch_size if self.train else len(order)
        for start in range(0, stop, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.images[index]  # [B, H, W] uint8
            if self.augment:
                images = crop_flip(images, offsets[index], flips[index], self.dataset.pad)
            yield normalise(images, self.dataset.mean[0], self.dataset.std[0]), self.targets[index]


def normalise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 [B, H, W] -> float32 [B, 1, H, W]: the same operations, in the same order, as the data set's
    ``__getitem__`` (divide by 255, subtract the mean, divide by the std), so the values are bit-identical."""
    return ((images.float().div_(255.0) - mean) / std).unsqueeze(1)


def resolve_loader(kind: str, dataset: Dataset) -> str:
    """``"tensor"`` or ``"dataloader"`` for ``kind`` (``"auto"``: the tensor path for in-memory data sets)."""
    check_choice("loader", kind, LOADERS)
    if kind == "auto":
        return "tensor" if isinstance(dataset, ArrayImageDataset) else "dataloader"
    if kind == "tensor" and not isinstance(dataset, ArrayImageDataset):
        raise ValueError(
            f"loader='tensor' is not allowed for {type(dataset).__name__}: it needs an in-memory data set "
            "(fashion_mnist, digits); use loader='dataloader' or 'auto'"
        )
    return kind


def make_batches(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    loader: str = "auto",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
) -> TensorLoader | DataLoader:
    """The batches of ``dataset`` for one process: a :class:`TensorLoader` or a DataLoader (``loader``)."""
    if resolve_loader(loader, dataset) == "tensor":
        return TensorLoader(
            dataset, batch_size, train=train, seed=seed, rank=rank, world_size=world_size, device=device
        )
    return make_loader(
        dataset, batch_size, train=train, seed=seed, rank=rank, world_size=world_size, num_workers=num_workers
    )
