"""Fashion-MNIST's files: where they are looked for, installing them when absent, reading the idx format."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from .errors import CorruptImageError, DataNotFound
from .files import cache_dir

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
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
    import torchvision

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
    folder = require_fashion_mnist(root)
    images_name, labels_name = FASHION_MNIST_FILES[split]
    images = read_idx(_idx_file(folder, images_name))
    labels = read_idx(_idx_file(folder, labels_name))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise CorruptImageError(f"Fashion-MNIST {split} files in {folder} disagree: {images.shape} vs {labels.shape}")
    return images, labels
