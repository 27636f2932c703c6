"""Fashion-MNIST's files: where they are looked for, installing them when absent, reading the idx format."""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.datasets.mnist import read_image_file, read_label_file

from .errors import CorruptImageError, DataNotFound
from .files import cache_dir

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
APT_INSTALL_COMMAND = "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist"


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
        return require_fashion_mnist(root)
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        print("Fashion-MNIST not found: installing Debian's dataset-fashion-mnist", file=sys.stderr)
        for command in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"],
        ):
            if subprocess.run(command, check=False).returncode != 0:
                break
        if find_fashion_mnist() is not None:
            return require_fashion_mnist(None)
    if install:
        _download_fashion_mnist()
    return require_fashion_mnist(None)


def _download_fashion_mnist() -> None:
    target = cache_dir() / "fashion_mnist"
    try:
        torchvision.datasets.FashionMNIST(str(target), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(target), train=False, download=True)
    except Exception as err:  # offline: URLError, OSError, RuntimeError depending on where it fails
        print(f"torchvision could not download Fashion-MNIST ({type(err).__name__}: {err})", file=sys.stderr)


def require_fashion_mnist(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding Fashion-MNIST, else DataNotFound naming where it looked and how to install it."""
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


def read_idx(path: Path, reader: Callable[[str], torch.Tensor] = read_image_file) -> np.ndarray:
    """An idx file (MNIST format; gzip or plain) read by one of torchvision's readers (``read_image_file``:
    uint8 [N, H, W]; ``read_label_file``: int64 [N]), as a numpy array; a damaged file is a CorruptImageError."""
    try:
        if path.suffix != ".gz":
            return reader(str(path)).numpy()
        # torchvision's readers open plain files only: the archive is unpacked into a temporary file first
        with gzip.open(path, "rb") as packed, tempfile.NamedTemporaryFile(suffix=f"-{path.stem}") as plain:
            shutil.copyfileobj(packed, plain)
            plain.flush()
            return reader(plain.name).numpy()
    except (OSError, EOFError) as err:
        raise CorruptImageError(f"cannot read {path}: {err}; delete it and run `python -m vitstudy data`") from err
    except (AssertionError, KeyError, RuntimeError, TypeError, ValueError) as err:
        # torchvision asserts on a bad header, and a truncated body no longer fits the header's shape
        raise CorruptImageError(
            f"{path} is truncated or damaged ({type(err).__name__}: {err}); delete it and fetch it again"
        ) from err


def load_fashion_mnist_arrays(split: str, root: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 28, 28] uint8 and labels [N] int64 of the official ``train`` (60k) or ``test`` (10k) split."""
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split={split!r} is not allowed: expected one of {tuple(FASHION_MNIST_FILES)}")
    folder = require_fashion_mnist(root)
    images_name, labels_name = FASHION_MNIST_FILES[split]
    paths = (_idx_file(folder, images_name), _idx_file(folder, labels_name))
    images, labels = _read_split(*paths, tuple(_file_stamp(path) for path in paths))
    if len(images) != len(labels):
        raise CorruptImageError(f"Fashion-MNIST {split} files in {folder} disagree: {images.shape} vs {labels.shape}")
    # copies: the cached arrays stay as read whatever a caller does to its own
    return images.copy(), labels.copy()


def _file_stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _read_split(images: Path, labels: Path, stamps: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Both idx files of one split, read once per process while they are unchanged (``stamps``: their modification
    times and sizes, so a replaced or damaged file is read again): unpacking the 60k training images takes about
    as long as a short smoke run trains, and a run builds its splits more than once."""
    return read_idx(images, read_image_file), read_idx(labels, read_label_file)
