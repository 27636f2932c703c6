"""The fast training path (vitstudy.fast_data) against the DataLoader path it replaces."""

import dataclasses

import pytest
import torch

from vitstudy.data import build_splits, crop_flip, make_loader
from vitstudy.fast_data import TensorLoader, make_batches


def _pairs(cfg, epoch, rank=0, world_size=1, batch=32):
    splits = build_splits(cfg)
    loader = make_loader(splits.train, batch, train=True, seed=cfg.seed, rank=rank, world_size=world_size)
    fast = TensorLoader(splits.train, batch, train=True, seed=cfg.seed, rank=rank, world_size=world_size)
    loader.sampler.set_epoch(epoch)
    fast.sampler.set_epoch(epoch)
    return list(loader), list(fast)


@pytest.mark.parametrize("epoch", [0, 3])
def test_batches_equal_the_dataloader_path(digits_cfg, epoch):
    """Same seed and epoch: the same images (augmented identically, bit for bit), labels and batch count."""
    cfg = dataclasses.replace(digits_cfg, augment=True, seed=5)
    slow, fast = _pairs(cfg, epoch)
    assert len(slow) == len(fast) > 0
    for (xs, ys), (xf, yf) in zip(slow, fast):
        assert xs.dtype == xf.dtype and xs.shape == xf.shape
        assert torch.equal(xs, xf) and torch.equal(ys, yf)


def test_batches_equal_for_each_rank_of_two(digits_cfg):
    """A shard of two processes matches DistributedSampler's shard of the DataLoader path."""
    cfg = dataclasses.replace(digits_cfg, augment=True)
    for rank in (0, 1):
        slow, fast = _pairs(cfg, 1, rank=rank, world_size=2)
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(slow, fast))


def test_epochs_differ_and_augmentation_changes_images(digits_cfg):
    """Another epoch gives another order and other crops (the table depends on the epoch)."""
    cfg = dataclasses.replace(digits_cfg, augment=True)
    _, first = _pairs(cfg, 0)
    _, second = _pairs(cfg, 1)
    assert not torch.equal(first[0][1], second[0][1])


def test_evaluation_batches_keep_every_image_in_order(digits_cfg):
    """Evaluation: every image once, in order, the last batch short, equal to the DataLoader's."""
    splits = build_splits(digits_cfg)
    slow = list(make_loader(splits.val, 50, train=False))
    fast = list(make_batches(splits.val, 50, train=False, loader="tensor"))
    assert len(fast) == len(slow) == -(-len(splits.val) // 50)
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(slow, fast))


def test_crop_flip_matches_pad_slice_flip():
    """crop_flip equals padding, slicing and flipping one image at a time (the reference answer)."""
    images = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)
    offsets, flips = torch.tensor([[0, 3], [2, 1]]), torch.tensor([True, False])
    out = crop_flip(images, offsets, flips, pad=2)
    for b in range(2):
        top, left = offsets[b].tolist()
        want = torch.nn.functional.pad(images[b], (2,) * 4)[top : top + 4, left : left + 5]
        assert torch.equal(out[b], want.flip(-1) if flips[b] else want)


def test_tensor_loader_for_files_is_one_clear_error():
    """loader='tensor' on a non-in-memory data set names the value and what to use."""
    with pytest.raises(ValueError, match="loader='tensor' is not allowed"):
        make_batches(torch.utils.data.TensorDataset(torch.zeros(2)), 1, train=True, loader="tensor")


def test_unknown_loader_is_named():
    """A bad loader name in the config is one line naming it and the choices."""
    from vitstudy.config import TrainConfig

    with pytest.raises(ValueError, match="loader='fast' is not allowed"):
        TrainConfig(loader="fast")
