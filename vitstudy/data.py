"""Data sets: Fashion-MNIST (the default, real and offline), cluttered Fashion-MNIST (``vitstudy.cluttered``),
scikit-learn's digits (tests), any ImageFolder tree.

Fashion-MNIST's files (search, install, idx format) live in ``vitstudy.fashion_mnist``; the errors a user can fix
(``DataNotFound``, ``CorruptImageError``) in ``vitstudy.errors``, importable from here too.

Splits are deterministic and independent of the training seed: the validation hold-out is carved from the
official training split with a fixed permutation, so every run of every notebook sees the same images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import ImageDataset, create_transform, resolve_data_config
from timm.models import get_pretrained_cfg
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from .cluttered import cluttered_mean_std, load_cluttered_arrays
from .config import DATASETS, TrainConfig
from .errors import CorruptImageError, DataNotFound
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist_arrays, require_fashion_mnist
from .models import FASHION_MNIST_MEAN, FASHION_MNIST_STD

SPLIT_SEED = 20240601  # fixed on purpose: splits must not move when the training seed changes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


# ----------------------------------------------------------------------------------------------------------
# Datasets


def augmentation_seed(seed: int, epoch: int) -> int:
    """The generator seed of one epoch's crop-and-flip table: a function of (seed, epoch) alone."""
    return (seed * 1_000_003 + epoch * 1_009 + 17) % 2**32


def crop_flip_params(count: int, pad: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's augmentation, drawn for every image of a data set at once from its own generator.

    Returns (offsets [count, 2] int64 = (top, left) in 0 … 2·pad, flips [count] bool). Both loading paths (one
    image at a time in a DataLoader, whole batches in :mod:`vitstudy.fast_data`) index this one table by image
    number, so they crop and flip every image identically whatever the batch order, processes or workers.
    """
    generator = torch.Generator().manual_seed(augmentation_seed(seed, epoch))
    offsets = torch.randint(0, 2 * pad + 1, (count, 2), generator=generator)
    flips = torch.rand(count, generator=generator) < 0.5
    return offsets, flips


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


class ArrayImageDataset(Dataset):
    """Grey images held in memory, returned as ([1, H, W] float, normalised; label).

    ``augment`` applies a random crop after ``pad`` pixels of zero padding and a horizontal flip, looked up in
    :func:`crop_flip_params` of ``(seed, epoch)``; the training sampler calls :meth:`set_epoch` each epoch.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: tuple[str, ...],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: bool = False,
        pad: int = 2,
        seed: int = 0,
    ) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))  # [N, H, W] uint8
        self.targets = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.classes = classes
        self.mean, self.std = mean, std
        self.augment, self.pad, self.seed = augment, pad, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s crops and flips from now on."""
        self.epoch = epoch
        self._params: tuple[torch.Tensor, torch.Tensor] | None = None  # drawn on first use

    def augmentation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's (offsets [N, 2], flips [N]) of :func:`crop_flip_params`."""
        if self._params is None:
            self._params = crop_flip_params(len(self), self.pad, self.seed, self.epoch)
        return self._params

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].float().div_(255.0).unsqueeze(0)  # [1, H, W]
        if self.augment:
            offsets, flips = self.augmentation()  # the [1, H, W] image is a batch of one for crop_flip
            image = crop_flip(image, offsets[index : index + 1], flips[index : index + 1], self.pad)
        image = (image - self.mean[0]) / self.std[0]
        return image, int(self.targets[index])


@dataclass
class Splits:
    """Train / validation / test datasets of one data set, with what a model needs to know about them."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    classes: tuple[str, ...]
    input_size: tuple[int, int, int]  # (channels, height, width)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def build_splits(cfg: TrainConfig, data_config: dict[str, Any] | None = None) -> Splits:
    """Deterministic train/val/test splits of ``cfg.dataset`` with ``cfg``'s subset sizes.

    ``data_config`` (timm's ``resolve_data_config`` dict) sets the transforms of ``imagefolder``; by default it
    is resolved from ``cfg.model``'s pretrained config.
    """
    if cfg.dataset in ("fashion_mnist", "fashion_mnist_cluttered"):
        cluttered = cfg.dataset == "fashion_mnist_cluttered"
        load = load_cluttered_arrays if cluttered else load_fashion_mnist_arrays
        train, test = (load(split, cfg.data_root)[:2] for split in ("train", "test"))
        mean, std = cluttered_mean_std(cfg.data_root) if cluttered else (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
        return _array_splits(cfg.dataset, cfg, train, test, FASHION_MNIST_CLASSES, mean, std)
    if cfg.dataset == "digits":
        return _digits_splits(cfg)
    if cfg.dataset == "imagefolder":
        return _imagefolder_splits(cfg, data_config)
    raise ValueError(f"dataset={cfg.dataset!r} is not allowed: expected one of {DATASETS}")


def _array_splits(name, cfg, train_arrays, test_arrays, classes, mean, std) -> Splits:
    images, labels = train_arrays
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    val_index, train_index = _take(order, cfg.val_size, cfg.train_size, len(images), name)
    test_images, test_labels = test_arrays
    test_order = np.random.default_rng(SPLIT_SEED + 1).permutation(len(test_images))
    test_index = np.sort(_subset(test_order, cfg.test_size, "test_size", name))

    def make(index, augment):
        return ArrayImageDataset(images[index], labels[index], classes, mean, std, augment=augment, seed=cfg.seed)

    train = make(np.sort(train_index), cfg.augment)
    val = make(np.sort(val_index), False)
    test = ArrayImageDataset(test_images[test_index], test_labels[test_index], classes, mean, std)
    return Splits(name, train, val, test, classes, (1, *images.shape[1:]))


def _take(order: np.ndarray, val_size: int, train_size: int | None, total: int, name: str):
    if val_size >= total:
        raise ValueError(f"val_size={val_size} is too large for {name}: its training split has {total} images")
    val_index, rest = order[:val_size], order[val_size:]
    return val_index, _subset(rest, train_size, "train_size", name)


def _subset(order: np.ndarray, size: int | None, field: str, name: str) -> np.ndarray:
    if size is None:
        return order
    if size > len(order):
        raise ValueError(f"{field}={size} is too large for {name}: only {len(order)} images are available")
    return order[:size]


def _digits_splits(cfg: TrainConfig) -> Splits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 images with values 0..16 -> uint8 0..255, so they share ArrayImageDataset with Fashion-MNIST.
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    labels = digits.target
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    test_count = len(images) // 5  # no official split: a fixed 20% is the test set
    test_part, train_part = order[:test_count], order[test_count:]
    mean, std = (float(images.mean() / 255),), (float(images.std() / 255),)
    classes = tuple(str(d) for d in range(10))
    train_arrays = (images[train_part], labels[train_part])
    test_arrays = (images[np.sort(test_part)], labels[np.sort(test_part)])
    return _array_splits("digits", cfg, train_arrays, test_arrays, classes, mean, std)


# ----------------------------------------------------------------------------------------------------------
# ImageFolder / ImageNet through timm's data pipeline


class CheckedImageDataset(ImageDataset):
    """timm's ImageDataset, but an unreadable file is an error that names it, not a silent skip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_retries = 1  # timm retries the *next* file on a decode error; we want to hear about it

    def __getitem__(self, index: int):
        # timm logs "Skipped sample" before its next try; with one try nothing is skipped: the error below says it.
        timm_log = logging.getLogger(ImageDataset.__module__)
        was_disabled, timm_log.disabled = timm_log.disabled, True
        try:
            return super().__getitem__(index)
        except RuntimeError as err:
            if "consecutive samples" not in str(err):
                raise
            path = self.reader.filename(index, absolute=True)
            raise CorruptImageError(f"cannot read image {path}: delete or replace the file") from err
        finally:
            timm_log.disabled = was_disabled


def imagefolder_split_dir(root: Path, split: str) -> Path:
    """``root/train`` or ``root/val`` (also ``validation``), checked to hold class folders with images."""
    names = {"train": ("train",), "val": ("val", "validation")}[split]
    for name in names:
        if (root / name).is_dir():
            folder = root / name
            break
    else:
        raise DataNotFound(
            f"{root} has no {'/ or '.join(names)}/ folder: expected ImageNet's layout "
            "root/train/CLASS/*.JPEG and root/val/CLASS/*.JPEG"
        )
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*") if p.is_file()):
        raise DataNotFound(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders")
    return folder


def imagefolder_root(cfg: TrainConfig) -> Path:
    """``cfg.data_root``, checked to be a folder; DataNotFound saying what to pass when it is not."""
    if cfg.data_root is None:
        raise DataNotFound("dataset='imagefolder' needs data_root=/path/to/root with train/ and val/ class folders")
    root = Path(cfg.data_root)
    if not root.is_dir():
        raise DataNotFound(f"data_root {str(root)!r} does not exist or is not a folder")
    return root


def check_data(cfg: TrainConfig) -> None:
    """Raise DataNotFound, naming the folder and the fix, unless ``cfg``'s data set is there (reads no image)."""
    if cfg.dataset in ("fashion_mnist", "fashion_mnist_cluttered"):
        require_fashion_mnist(cfg.data_root)
    elif cfg.dataset == "imagefolder":
        root = imagefolder_root(cfg)
        for split in ("train", "val"):
            imagefolder_split_dir(root, split)


def _imagefolder_splits(cfg: TrainConfig, data_config: dict[str, Any] | None) -> Splits:
    root = imagefolder_root(cfg)
    if data_config is None:
        pretrained_cfg = get_pretrained_cfg(cfg.model)
        data_config = resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else None)
    train_transform = create_transform(**data_config, is_training=cfg.augment)
    eval_transform = create_transform(**data_config, is_training=False)
    train_dir, test_dir = imagefolder_split_dir(root, "train"), imagefolder_split_dir(root, "val")
    train_full = CheckedImageDataset(str(train_dir), transform=train_transform)
    train_eval = CheckedImageDataset(str(train_dir), transform=eval_transform)
    test_full = CheckedImageDataset(str(test_dir), transform=eval_transform)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(train_full))
    val_index, train_index = _take(order, cfg.val_size, cfg.train_size, len(train_full), str(root))
    test_order = np.random.default_rng(SPLIT_SEED + 1).permutation(len(test_full))
    test_index = _subset(test_order, cfg.test_size, "test_size", str(root))
    classes = tuple(train_full.reader.class_to_idx) if hasattr(train_full.reader, "class_to_idx") else ()
    train = Subset(train_full, np.sort(train_index).tolist())
    val = Subset(train_eval, np.sort(val_index).tolist())
    test = test_full if cfg.test_size is None else Subset(test_full, np.sort(test_index).tolist())
    return Splits("imagefolder", train, val, test, classes, tuple(data_config["input_size"]))


# ----------------------------------------------------------------------------------------------------------
# Loaders


class EpochSampler(DistributedSampler):
    """DistributedSampler that also tells its data set the epoch (its augmentation table depends on it)."""

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``, in order, without DistributedSampler's padding duplicates."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def default_num_workers(dataset: Dataset, world_size: int = 1) -> int:
    """In-memory tensors need no workers (a worker costs more to start than it saves); files get the cores."""
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    if isinstance(base, ArrayImageDataset):
        return 0
    return max(1, min(8, (os.cpu_count() or 1) // world_size - 1))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int | None = None,
) -> DataLoader:
    """A loader for one process of ``world_size``: shuffled shards for training, plain shards for evaluation.

    Training uses DistributedSampler even in one process, so one process with batch B sees the same global
    batches as ``world_size`` processes with B / world_size each (call ``loader.sampler.set_epoch``).
    """
    if train:
        sampler: Sampler[int] = EpochSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    workers = default_num_workers(dataset, world_size) if num_workers is None else num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=train,  # equal batches on every rank keep DDP's gradient average exact
        num_workers=workers,
        # Workers copy the data set when an epoch's iterator starts; persistent ones would keep epoch 0's crops.
        persistent_workers=workers > 0 and not hasattr(dataset, "set_epoch"),
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
    )
