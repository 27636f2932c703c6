import gzip

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from vitstudy import data
from vitstudy.config import TrainConfig
from vitstudy.fashion_mnist import _idx_file, find_fashion_mnist, read_idx


def test_digits_splits_have_requested_sizes(digits_cfg):
    """Subsets by size: train and val as asked, test the fixed 20% hold-out."""
    splits = data.build_splits(digits_cfg)
    assert splits.sizes() == {"train": 512, "val": 128, "test": 359}


def test_splits_do_not_depend_on_training_seed(digits_cfg):
    """The training seed changes the run, never which images are in which split."""
    import dataclasses

    a = data.build_splits(digits_cfg)
    b = data.build_splits(dataclasses.replace(digits_cfg, seed=7))
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.images, b.train.images)


def test_smaller_subset_is_nested_in_larger(digits_cfg):
    """A smaller train_size takes a prefix of the same fixed order: subsets nest."""
    import dataclasses

    small = data.build_splits(dataclasses.replace(digits_cfg, train_size=100)).train
    large = data.build_splits(digits_cfg).train
    small_set = {bytes(x.numpy()) for x in small.images}
    assert small_set <= {bytes(x.numpy()) for x in large.images}


def test_splits_are_disjoint(digits_cfg):
    """No image index is in both train and validation (same source array)."""
    splits = data.build_splits(TrainConfig(dataset="fashion_mnist", train_size=2000, val_size=500, test_size=100))
    train = {bytes(x.numpy()) for x in splits.train.images}
    val = {bytes(x.numpy()) for x in splits.val.images}
    assert len(train & val) <= 5  # Fashion-MNIST has a few exact duplicate images; indices never overlap


def test_fashion_mnist_is_the_real_data_set():
    """The default data set is the full real Fashion-MNIST: 60k train, 10k test, 28x28, 10 classes."""
    images, labels = data.load_fashion_mnist_arrays("train")
    test_images, _ = data.load_fashion_mnist_arrays("test")
    assert images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [6000] * 10


def test_items_are_normalised_single_channel(digits_cfg):
    """A dataset item is a [1, H, W] float tensor and an int label."""
    image, label = data.build_splits(digits_cfg).train[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32 and isinstance(label, int)


def test_unknown_dataset_is_named():
    """An unknown data set name is refused with the allowed names."""
    with pytest.raises(ValueError, match=r"dataset='cifar10'.*fashion_mnist"):
        TrainConfig(dataset="cifar10")


def test_val_size_too_large_is_named(digits_cfg):
    """Asking for more validation images than exist names the value and the available count."""
    import dataclasses

    with pytest.raises(ValueError, match=r"val_size=5000 .* 1438"):
        data.build_splits(dataclasses.replace(digits_cfg, val_size=5000))


def test_missing_fashion_mnist_root_is_named(tmp_path):
    """An explicit data_root without the files is an error naming that folder."""
    with pytest.raises(data.DataNotFound, match=str(tmp_path / "nowhere")):
        data.build_splits(TrainConfig(data_root=str(tmp_path / "nowhere")))


def test_corrupt_idx_file_is_named(tmp_path):
    """A truncated idx file gives an error naming the file, not a numpy reshape traceback."""
    source = find_fashion_mnist()
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (tmp_path / f"{name}.gz").write_bytes(_idx_file(source, name).read_bytes())
    broken = tmp_path / "t10k-images-idx3-ubyte.gz"
    broken.write_bytes(gzip.compress(gzip.decompress(broken.read_bytes())[:5000]))
    with pytest.raises(data.CorruptImageError, match="t10k-images-idx3-ubyte.gz is truncated"):
        data.load_fashion_mnist_arrays("test", root=tmp_path)


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file written out by hand: two zero bytes, 0x08 (uint8), the number of dimensions, each size as a
    big-endian int32, then the values."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("packed", [False, True])
def test_read_idx_reads_back_a_hand_written_file(tmp_path, packed):
    """Images and labels written in the idx format (plain or gzip) read back value for value, as uint8 [N, H, W]
    and int64 [N]."""
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 5)).astype(np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    paths = []
    for name, array in (("images", images), ("labels", labels)):
        path = tmp_path / (f"{name}.gz" if packed else name)
        path.write_bytes(gzip.compress(idx_bytes(array)) if packed else idx_bytes(array))
        paths.append(path)
    read_images, read_labels = read_idx(paths[0], read_image_file), read_idx(paths[1], read_label_file)
    assert read_images.dtype == np.uint8 and np.array_equal(read_images, images)
    assert read_labels.dtype == np.int64 and np.array_equal(read_labels, labels)


def test_idx_file_of_another_type_is_named(tmp_path):
    """A header that is not a uint8 idx file is an error naming the file."""
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + bytes(4))  # 0x0d: float32
    with pytest.raises(data.CorruptImageError, match="t10k-labels-idx1-ubyte is truncated or damaged"):
        read_idx(path, read_label_file)


def test_torchvision_layout_is_found(tmp_path):
    """A torchvision download (root/FashionMNIST/raw) is recognised."""
    source = find_fashion_mnist()
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in source.iterdir():
        (raw / path.name).symlink_to(path)
    assert find_fashion_mnist(tmp_path) == raw


def test_distributed_shards_union_equals_single_process_batches(digits_cfg):
    """Two ranks with batch b see, step by step, exactly the single process's batch 2b."""
    dataset = data.build_splits(digits_cfg).train
    single = [y for _, y in data.make_loader(dataset, 32, train=True, seed=3)]
    ranks = [[y for _, y in data.make_loader(dataset, 16, train=True, seed=3, rank=r, world_size=2)] for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1])
    for whole, a, b in zip(single, *ranks):
        assert sorted(whole.tolist()) == sorted(a.tolist() + b.tolist())


def test_imagefolder_uses_timm_transforms(tmp_path, image_tree):
    """An ImageNet-layout tree loads through timm's pipeline at the model's input size."""
    image_tree(tmp_path)
    cfg = TrainConfig(model="deit_tiny_patch16_224", dataset="imagefolder", data_root=str(tmp_path), val_size=2)
    splits = data.build_splits(cfg)
    image, label = splits.test[0]
    assert splits.sizes() == {"train": 4, "val": 2, "test": 6} and image.shape == (3, 224, 224)
    assert splits.classes == ("cat", "dog")


def test_corrupt_image_is_named(tmp_path, image_tree):
    """An undecodable image file is an error naming the file, not a silent skip."""
    image_tree(tmp_path, corrupt=True)
    cfg = TrainConfig(model="deit_tiny_patch16_224", dataset="imagefolder", data_root=str(tmp_path), val_size=0)
    dataset = data.build_splits(cfg).train.dataset
    index = [i for i in range(len(dataset)) if dataset.reader.filename(i).endswith("cat/0.png")][0]
    with pytest.raises(data.CorruptImageError, match=r"cat/0\.png"):
        dataset[index]


def test_imagefolder_without_train_folder_is_named(tmp_path):
    """A root without train/ says which layout is expected."""
    (tmp_path / "val").mkdir()
    cfg = TrainConfig(model="deit_tiny_patch16_224", dataset="imagefolder", data_root=str(tmp_path), val_size=0)
    with pytest.raises(data.DataNotFound, match="has no train/ folder"):
        data.build_splits(cfg)


def test_empty_imagefolder_is_named(tmp_path):
    """Class folders without images are reported with the folder's path."""
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "val" / "cat").mkdir(parents=True)
    cfg = TrainConfig(model="deit_tiny_patch16_224", dataset="imagefolder", data_root=str(tmp_path), val_size=0)
    with pytest.raises(data.DataNotFound, match="holds no images"):
        data.build_splits(cfg)
