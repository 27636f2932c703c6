"""Cluttered Fashion-MNIST (vitstudy.cluttered): deterministic, fragments from other images, the item on at most
16 of 49 tokens, normalised by its own statistics, and batched identically by both loading paths."""

import dataclasses

import pytest
import torch

from vitstudy import cluttered
from vitstudy.config import TrainConfig
from vitstudy.data import build_splits, make_loader
from vitstudy.fashion_mnist import load_fashion_mnist_arrays
from vitstudy.fast_data import TensorLoader

CFG = TrainConfig(
    dataset="fashion_mnist_cluttered",
    model="vitstudy_tiny_patch8_56",
    train_size=300,
    val_size=100,
    test_size=200,
    batch_size=32,
    augment=False,
)


def test_canvases_are_deterministic_per_split_and_index():
    """The same split gives the same canvases in every call; train and test draw differently."""
    images = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)
    first, corners = cluttered.clutter(images, seed=1)
    again, again_corners = cluttered.clutter(images.clone(), seed=1)
    assert torch.equal(first, again) and torch.equal(corners, again_corners)
    assert not torch.equal(first, cluttered.clutter(images, seed=2)[0])
    assert first.shape == (50, 56, 56) and first.dtype == torch.uint8


def test_item_sits_on_the_grid_and_the_clutter_comes_from_other_images():
    """Image i's canvas holds image i at its corner (pasted last, by maximum) and fragments of the others only:
    with one white item among black ones, only that canvas is white where its item is, and the other canvases
    carry white fragments of it but never a whole item."""
    images = torch.zeros(20, 28, 28, dtype=torch.uint8)
    images[7] = 255
    canvases, corners = cluttered.clutter(images, seed=3)
    top, left = corners[7].tolist()
    assert top % 4 == 0 and left % 4 == 0 and 0 <= top <= 28 and 0 <= left <= 28
    assert (canvases[7, top : top + 28, left : left + 28] == 255).all()
    inside = torch.zeros(56, 56, dtype=torch.bool)
    inside[top : top + 28, left : left + 28] = True
    assert (canvases[7][~inside] == 0).all()  # image 7 is never its own clutter; the others are black
    others = canvases[torch.arange(20) != 7]
    assert (others == 255).any() and (others == 255).sum(dim=(1, 2)).max() <= cluttered.FRAGMENTS * 64


def test_at_least_half_the_tokens_carry_no_part_of_the_item():
    """On the real test split every canvas has the item on at most 16 of its 49 tokens (>= 33 without it), and
    the clutter makes most of the others non-blank."""
    items, _ = load_fashion_mnist_arrays("test")
    canvases, _, corners = cluttered.load_cluttered_arrays("test")
    on_item = cluttered.item_tokens(torch.from_numpy(items), torch.from_numpy(corners)).sum(dim=(1, 2))
    assert on_item.max() <= 16 and on_item.float().mean() > 8
    tokens = torch.from_numpy(canvases).view(-1, 7, 8, 7, 8).amax(dim=(2, 4)) > 0
    assert tokens.sum(dim=(1, 2)).float().mean() > on_item.float().mean() + 15  # clutter-only tokens: many


def test_splits_use_the_cluttered_statistics_and_the_patch8_model():
    """build_splits gives 56x56 grey canvases normalised by their own mean and std, and the registered patch-8
    model has 49 tokens on them."""
    from vitstudy.train import default_model_factory

    splits = build_splits(CFG)
    assert splits.input_size == (1, 56, 56) and splits.sizes() == {"train": 300, "val": 100, "test": 200}
    mean, std = cluttered.cluttered_mean_std()
    assert splits.train.mean == mean and 0.1 < mean[0] < 0.3 and 0.2 < std[0] < 0.4
    model = default_model_factory(CFG, splits)
    assert model.patch_embed.num_patches == 49 and model(torch.zeros(2, 1, 56, 56)).shape == (2, 10)


@pytest.mark.parametrize("train", [True, False])
def test_fast_path_equals_the_dataloader_path(train):
    """The in-memory tensor batches equal the DataLoader's, value for value, for the cluttered set too."""
    splits = build_splits(dataclasses.replace(CFG, augment=True))
    dataset = splits.train if train else splits.test
    fast = TensorLoader(dataset, 32, train=train, seed=5)
    slow = make_loader(dataset, 32, train=train, seed=5, num_workers=0)
    for epoch in (0, 1) if train else (0,):
        fast.sampler.set_epoch(epoch)
        if train:
            slow.sampler.set_epoch(epoch)
        pairs = list(zip(fast, slow, strict=True))
        assert pairs and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)


def test_bad_split_is_one_line():
    with pytest.raises(ValueError, match="split='val' is not allowed: expected one of"):
        cluttered.load_cluttered_arrays("val")
    with pytest.raises(ValueError, match="at least 2 images"):
        cluttered.clutter(torch.zeros(1, 28, 28, dtype=torch.uint8), seed=0)
