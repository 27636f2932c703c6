"""The shared plot helpers against answers written out by hand: the confusion counts (sklearn), the image mosaic
(torchvision's make_grid plus the frame colours) and the display scaling."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb

from vitstudy import plots


def hand_confusion(predictions: np.ndarray, targets: np.ndarray, count: int) -> np.ndarray:
    matrix = np.zeros((count, count))
    np.add.at(matrix, (targets, predictions), 1)
    return matrix


def test_confusion_counts_rows_by_true_class():
    """Without normalising, cell (true, predicted) counts those images; a class never seen is a row of zeros."""
    predictions, targets = np.array([0, 1, 1, 2, 0, 2]), np.array([0, 1, 2, 2, 0, 0])
    counts = plots.confusion(predictions, targets, 4, normalize=False)
    assert np.array_equal(counts, hand_confusion(predictions, targets, 4))


def test_confusion_normalised_is_percent_of_each_true_class():
    """Normalised, each row is the % of its true class (rows sum to 100), and a class without images stays 0."""
    rng = np.random.default_rng(0)
    predictions, targets = rng.integers(0, 4, 200), rng.integers(0, 3, 200)  # class 3 never true
    counts = hand_confusion(predictions, targets, 4)
    expected = 100 * counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    matrix = plots.confusion(predictions, targets, 4)
    assert matrix == pytest.approx(expected)
    assert matrix[:3].sum(axis=1) == pytest.approx([100, 100, 100]) and not matrix[3].any()


def test_image_batch_scales_each_image_to_the_unit_range():
    """Each image of a batch [N, H, W] becomes [N, 1, H, W] with its own minimum at 0 and maximum at 1."""
    images = torch.stack([torch.arange(4.0).reshape(2, 2) * 3 - 5, torch.full((2, 2), 7.0)])
    scaled = plots.image_batch(images)
    assert scaled.shape == (2, 1, 2, 2)
    assert torch.allclose(scaled[0, 0], torch.tensor([[0, 1 / 3], [2 / 3, 1]]))
    assert torch.equal(scaled[1], torch.zeros(1, 2, 2))  # a flat image is black, not NaN


def test_image_mosaic_frames_each_image_in_its_colour():
    """Two grey images in a 3-wide grid: each framed in its colour, the label band and gaps white, the empty third
    cell white, and the label centres under each cell — the same array as placing every pixel by hand."""
    images = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[3.0, 2.0], [1.0, 0.0]]])  # [2, 2, 2]
    border, gap, label_rows, colors = 1, 1, 2, ["tab:red", "tab:green"]
    mosaic, centres = plots.image_mosaic(images, 3, colors, label_rows=label_rows, gap=gap, border=border)
    cell_h, cell_w = 2 + 2 * border + label_rows, 2 + 2 * border + 2 * gap
    expected = np.ones((cell_h, 3 * cell_w, 3))
    for index, image in enumerate(images):
        left = index * cell_w + gap
        expected[0 : 2 + 2 * border, left : left + 2 + 2 * border] = to_rgb(colors[index])
        shown = plt.get_cmap("gray")(((image - image.min()) / (image.max() - image.min())).numpy())[..., :3]
        expected[border : border + 2, left + border : left + border + 2] = shown
    assert mosaic.shape == expected.shape and np.array_equal(mosaic, expected)
    assert centres == [((cell_w - 1) / 2, 2 + 2 * border + 0.5), (cell_w + (cell_w - 1) / 2, 2 + 2 * border + 0.5)]


def test_image_mosaic_of_no_images_is_one_white_row():
    """No images: one row of empty white cells, no label centres."""
    mosaic, centres = plots.image_mosaic(torch.zeros(0, 1, 8, 8), 4, [], label_rows=3, gap=1, border=2)
    assert mosaic.shape == (8 + 4 + 3, 4 * (8 + 4 + 2), 3) and (mosaic == 1).all() and centres == []
