"""Data sets: Fashion-MNIST (the default, real and offline), scikit-learn's digits (tests), any ImageFolder tree.

Splits are deterministic and independent of the training seed: the validation hold-out is carved from the
official training split with a fixed permutation, so every run of every notebook sees the same images.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from .config import DATASETS, TrainConfig
from .files import cache_dir
from .models import FASHION_MNIST_MEAN, FASHION_MNIST_STD

SPLIT_SEED = 20240601  # fixed on purpose: splits must not move when the training seed changes

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
APT_INSTALL_COMMAND = "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class DataNotFound(FileNotFoundError):
    """A data set is not where it was asked for, or nowhere it is looked for; the message says what to do."""


class CorruptImageError(RuntimeError):
    """An image file could not be decoded; the message names the file."""


# ----------------------------------------------------------------------------------------------------------
# Fashion-MNIST files


def fashion_mnist_search_path(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched in order: an explicit root (alone), else the project cache, then Debian's package."""
    if root is not None:
        return [Path(root)]
    return [cache_dir() / "fashion_mnist", DEBIAN_FASHION_MNIST]


def find_fashion_mnist(root: str | os.PathLike[str] | None = None) -> Path | None:
    """The first folder holding all four idx files (plain or .gz, also torchvision's FashionMNIST/raw layout)."""
    for folder in fashion_mnist_search_path(root):
        for candidate in (folder, folder / "FashionMNIST" / "raw"):
            if all(_idx_file(candidate, name) for pair in FASHION_MNIST_FILES.values() for name in pair):
                return candidate
    return None


def ensure_fashion_mnist(install: bool = True, root: str | os.PathLike[str] | None = None) -> Path:
    """Locate Fashion-MNIST; if absent, install Debian's package (as root with apt) or download with torchvision."""
    found = find_fashion_mnist(root)
    if found is not None or root is not None:
        return _require_fashion_mnist(root)
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        print("Fashion-MNIST not found: installing Debian's dataset-fashion-mnist", file=sys.stderr)
        for command in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"],
        ):
            if subprocess.run(command, check=False).returncode != 0:
                break
        if find_fashion_mnist() is not None:
            return _require_fashion_mnist(None)
    if install:
        _download_fashion_mnist()
    return _require_fashion_mnist(None)


def _download_fashion_mnist() -> None:
    import torchvision

    target = cache_dir() / "fashion_mnist"
    try:
        torchvision.datasets.FashionMNIST(str(target), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(target), train=False, download=True)
    except Exception as err:  # offline: URLError, OSError, RuntimeError depending on where it fails
        print(f"torchvision could not download Fashion-MNIST ({type(err).__name__}: {err})", file=sys.stderr)


def _require_fashion_mnist(root: str | os.PathLike[str] | None) -> Path:
    found = find_fashion_mnist(root)
    if found is not None:
        return found
    if root is not None:
        raise DataNotFound(
            f"data_root {str(root)!r} does not hold Fashion-MNIST: expected the four files "
            f"{', '.join(n for pair in FASHION_MNIST_FILES.values() for n in pair)} (plain or .gz) in it or in "
            f"its FashionMNIST/raw/ folder"
        )
    searched = ", ".join(str(p) for p in fashion_mnist_search_path())
    raise DataNotFound(
        f"Fashion-MNIST not found (searched {searched}). Install it with: {APT_INSTALL_COMMAND}  "
        "(or run `python -m vitstudy data` once with internet; or pass data_root=)"
    )


def _idx_file(folder: Path, name: str) -> Path | None:
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (MNIST format; gzip or plain) into a uint8 array, checking its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise CorruptImageError(f"cannot read {path}: {err}; delete it and run `python -m vitstudy data`") from err
    # Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one int32 per dim.
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] not in (1, 3):
        raise CorruptImageError(f"{path} is not a uint8 idx file (bad header); delete it and fetch it again")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise CorruptImageError(f"{path} is truncated: header says {shape}, found {len(raw) - offset} bytes")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape)


def load_fashion_mnist_arrays(split: str, root: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 28, 28] uint8 and labels [N] of the official ``train`` (60k) or ``test`` (10k) split."""
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split={split!r} is not allowed: expected one of {tuple(FASHION_MNIST_FILES)}")
    folder = _require_fashion_mnist(root)
    images_name, labels_name = FASHION_MNIST_FILES[split]
    images = read_idx(_idx_file(folder, images_name))
    labels = read_idx(_idx_file(folder, labels_name))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise CorruptImageError(f"Fashion-MNIST {split} files in {folder} disagree: {images.shape} vs {labels.shape}")
    return images, labels


# ----------------------------------------------------------------------------------------------------------
# Datasets


class ArrayImageDataset(Dataset):
    """Grey images held in memory, returned as ([1, H, W] float, normalised; label).

    ``augment`` applies a random crop after ``pad`` pixels of zero padding and a horizontal flip, drawn from
    torch's global generator, which the training loop seeds per epoch (so a resumed run draws the same).
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
    ) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))  # [N, H, W] uint8
        self.targets = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.classes = classes
        self.mean, self.std = mean, std
        self.augment, self.pad = augment, pad

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].float().div_(255.0).unsqueeze(0)  # [1, H, W]
        if self.augment:
            image = self._random_crop_flip(image)
        image = (image - self.mean[0]) / self.std[0]
        return image, int(self.targets[index])

    def _random_crop_flip(self, image: torch.Tensor) -> torch.Tensor:
        _, height, width = image.shape
        padded = F.pad(image, (self.pad,) * 4)
        top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        image = padded[:, top : top + height, left : left + width]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image


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
    if cfg.dataset == "fashion_mnist":
        train_images, train_labels = load_fashion_mnist_arrays("train", cfg.data_root)
        test_images, test_labels = load_fashion_mnist_arrays("test", cfg.data_root)
        return _array_splits(
            "fashion_mnist", cfg, (train_images, train_labels), (test_images, test_labels),
            FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD,
        )  # fmt: skip
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
        return ArrayImageDataset(images[index], labels[index], classes, mean, std, augment=augment)

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


def class_examples(dataset: ArrayImageDataset, per_class: int = 3) -> tuple[torch.Tensor, list[str]]:
    """The first ``per_class`` images of every class, ordered so that a grid with one column per class works."""
    by_class = [torch.nonzero(dataset.targets == k)[:per_class, 0].tolist() for k in range(len(dataset.classes))]
    order = [indices[r] for r in range(per_class) for indices in by_class if r < len(indices)]  # row r: r-th of each
    images = torch.stack([dataset[i][0] for i in order])
    return images, [dataset.classes[int(dataset.targets[i])] for i in order]


# ----------------------------------------------------------------------------------------------------------
# ImageFolder / ImageNet through timm's data pipeline


def _image_dataset_class():
    from timm.data import ImageDataset

    class CheckedImageDataset(ImageDataset):
        """timm's ImageDataset, but an unreadable file is an error that names it, not a silent skip."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._max_retries = 1  # timm retries the *next* file on a decode error; we want to hear about it

        def __getitem__(self, index: int):
            try:
                return super().__getitem__(index)
            except RuntimeError as err:
                if "consecutive samples" not in str(err):
                    raise
                path = self.reader.filename(index, absolute=True)
                raise CorruptImageError(f"cannot read image {path}: delete or replace the file") from err

    return CheckedImageDataset


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


def _imagefolder_splits(cfg: TrainConfig, data_config: dict[str, Any] | None) -> Splits:
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    if cfg.data_root is None:
        raise DataNotFound("dataset='imagefolder' needs data_root=/path/to/root with train/ and val/ class folders")
    root = Path(cfg.data_root)
    if not root.is_dir():
        raise DataNotFound(f"data_root {str(root)!r} does not exist or is not a folder")
    if data_config is None:
        pretrained_cfg = get_pretrained_cfg(cfg.model)
        data_config = resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else None)
    dataset_class = _image_dataset_class()
    train_transform = create_transform(**data_config, is_training=cfg.augment)
    eval_transform = create_transform(**data_config, is_training=False)
    train_dir, test_dir = imagefolder_split_dir(root, "train"), imagefolder_split_dir(root, "val")
    train_full = dataset_class(str(train_dir), transform=train_transform)
    train_eval = dataset_class(str(train_dir), transform=eval_transform)
    test_full = dataset_class(str(test_dir), transform=eval_transform)
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
        sampler: Sampler[int] = DistributedSampler(
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
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
    )
