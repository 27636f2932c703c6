"""The fast training path: an in-memory data set batched on its device, with no per-image Python work.

A :class:`TensorLoader` keeps the uint8 images and labels of an :class:`~vitstudy.data.ArrayImageDataset`
(Fashion-MNIST, digits) on the training device — the GPU when there is one — and builds each batch with a few
tensor operations: gather by index, crop and flip by index arithmetic, convert, normalise. No worker processes
(on a 2-core machine they compete with the compute threads), no collation of single images.

Its batches equal the DataLoader path's (:func:`vitstudy.data.make_loader`) for the same seed and epoch, value
for value: the same shuffled order (DistributedSampler's ``randperm`` of ``seed + epoch``, the same rank
shard and dropped tail) and the same crops and flips (one table per epoch, :func:`~vitstudy.data.crop_flip_params`,
indexed by image number). ``tests/test_fast_data.py`` checks it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .config import LOADERS, check_choice
from .data import ArrayImageDataset, crop_flip_params, make_loader


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
            offsets, flips = crop_flip_params(len(self.dataset), self.dataset.pad, self.dataset.seed,
                                              self.sampler.epoch)  # fmt: skip
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        stop = len(order) - len(order) % self.batch_size if self.train else len(order)
        for start in range(0, stop, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.images[index]  # [B, H, W] uint8
            if self.augment:
                images = crop_flip(images, offsets[index], flips[index], self.dataset.pad)
            yield normalise(images, self.dataset.mean[0], self.dataset.std[0]), self.targets[index]


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Random crops after zero padding, then horizontal flips, of a batch: images [B, H, W] (any dtype),
    offsets [B, 2] (top, left in 0 … 2·pad), flips [B] bool -> [B, H, W]."""
    B, H, W = images.shape
    padded = F.pad(images, (pad,) * 4)  # [B, H + 2p, W + 2p]; zero is black before and after normalising
    rows = offsets[:, :1] + torch.arange(H, device=images.device)  # [B, H]
    cols = offsets[:, 1:] + torch.arange(W, device=images.device)  # [B, W]
    cols = torch.where(flips[:, None], cols.flip(-1), cols)  # a flip reads the crop's columns right to left
    batch = torch.arange(B, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


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
        return TensorLoader(dataset, batch_size, train=train, seed=seed, rank=rank, world_size=world_size,
                            device=device)  # fmt: skip
    return make_loader(dataset, batch_size, train=train, seed=seed, rank=rank, world_size=world_size,
                       num_workers=num_workers)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# Does it win? Training steps fed by each path, timed by the comparison engine.


def _cycling_step(loader, model: torch.nn.Module, device: torch.device):
    """One training step (AdamW) on the loader's next batch; a new epoch's iterator when one runs out."""
    optimizer = torch.optim.AdamW(model.parameters())
    state = {"epoch": 0, "batches": iter(())}

    def step() -> None:
        batch = next(state["batches"], None)
        if batch is None:
            loader.sampler.set_epoch(state["epoch"])
            state["epoch"] += 1
            state["batches"] = iter(loader)
            batch = next(state["batches"])
        images, targets = batch[0].to(device), batch[1].to(device)
        F.cross_entropy(model(images), targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def loader_speed(cfg, batch_size: int, settings=None, workers: tuple[int, ...] = (1,), device=None):
    """Training throughput of ``cfg``'s model fed by the DataLoader path (0 workers, the in-memory default; and
    ``workers`` worker processes) and by :class:`TensorLoader`, plus an A/A copy of the DataLoader arm.

    Returns :meth:`vitstudy.bench.Comparison.rows` with images/s per arm; the baseline is the DataLoader path.
    """
    import copy

    from . import bench
    from .data import build_splits
    from .train import default_model_factory

    device = torch.device(device or bench.default_device())
    splits = build_splits(cfg)
    torch.manual_seed(cfg.seed)
    model = default_model_factory(cfg, splits).to(device).train()

    def arm(loader):
        return _cycling_step(loader, copy.deepcopy(model), device)

    arms = {"dataloader": arm(make_loader(splits.train, batch_size, train=True, seed=cfg.seed, num_workers=0))}
    for count in workers:
        arms[f"dataloader, {count} worker(s)"] = arm(
            make_loader(splits.train, batch_size, train=True, seed=cfg.seed, num_workers=count)
        )
    arms["tensor"] = arm(TensorLoader(splits.train, batch_size, train=True, seed=cfg.seed, device=device))
    arms["dataloader (A/A copy)"] = arm(make_loader(splits.train, batch_size, train=True, seed=cfg.seed,
                                                    num_workers=0))  # fmt: skip
    comparison = bench.compare(arms, "dataloader", "dataloader (A/A copy)", settings or bench.CompareSettings(),
                               device)  # fmt: skip
    rows = comparison.rows()
    rows.insert(2, "images_per_s", batch_size / rows["seconds"])
    rows["batch_size"], rows["model"], rows["augment"] = batch_size, cfg.model, cfg.augment
    rows["note"] = comparison.note or comparison.control_note()
    return rows, comparison
