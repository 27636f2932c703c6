"""Notebook 06's inputs (vitstudy.experiments.skipvit.patch_drop_explorer): the baseline on test images, the cluttered
data set, or any timm ViT with an image file."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import timm
import torch
from PIL import Image

from vitstudy import skipvit as sv
from vitstudy.experiments.skipvit import patch_drop_explorer as pde


def tiny_vit() -> torch.nn.Module:
    """The study's tiny 28x28 ViT at depth 2, seeded, in eval mode (stands in for a cached baseline)."""
    torch.manual_seed(0)
    return timm.create_model("vitstudy_tiny_patch4_28", depth=2).eval()


def test_explorer_inputs_model_name_needs_an_image_path():
    """MODEL_NAME without IMAGE_PATH is refused in one line that says what to set."""
    with pytest.raises(ValueError, match=r"MODEL_NAME='vit_small_patch16_224' needs IMAGE_PATH: .* MODEL_NAME = None"):
        pde.explorer_inputs("smoke", model_name="vit_small_patch16_224")


def test_explorer_inputs_model_name_with_an_image_file(tmp_path):
    """A timm model name and an image file: the patched model, one image in its input size, no labels."""
    path = tmp_path / "photo.png"
    Image.new("RGB", (60, 40), (200, 10, 10)).save(path)
    inputs = pde.explorer_inputs("smoke", image_path=path, model_name="vitstudy_tiny_patch4_28")
    assert isinstance(inputs.model, sv.SkipViTMixin) and not inputs.model.training
    assert inputs.images.shape == (1, 1, 28, 28) and inputs.labels is None and inputs.classes is None


def test_explorer_inputs_default_is_the_baseline_on_test_images(monkeypatch):
    """By default: the scale's baseline model, its class names, the first test images with their labels."""
    test = [(torch.full((1, 28, 28), float(i)), i % 3) for i in range(5)]
    run = SimpleNamespace(model=tiny_vit(), splits=SimpleNamespace(classes=["a", "b", "c"], test=test))
    monkeypatch.setattr(pde, "baseline", lambda scale: run)
    model, images, labels, classes = pde.explorer_inputs("smoke", count=4)
    assert model is run.model and isinstance(model, sv.SkipViTMixin)
    assert images.shape == (4, 1, 28, 28) and torch.equal(images[3], test[3][0])
    assert labels == [0, 1, 2, 0] and classes == ["a", "b", "c"]


def test_explorer_inputs_offer_the_cluttered_data_set(monkeypatch):
    """dataset="fashion_mnist_cluttered": the scale's recipe on the cluttered canvases (the patch-8 56x56 model),
    trained once by the same cached-baseline path; an unknown data set is one line."""
    asked = []
    test = [(torch.zeros(1, 56, 56), 0)]
    run = SimpleNamespace(model=tiny_vit(), splits=SimpleNamespace(classes=["a"], test=test))
    monkeypatch.setattr(pde, "baseline", lambda scale: asked.append(scale) or run)
    inputs = pde.explorer_inputs("smoke", dataset="fashion_mnist_cluttered")
    assert inputs.images.shape == (1, 1, 56, 56)
    train = asked[0].train
    assert (train.dataset, train.model) == ("fashion_mnist_cluttered", "vitstudy_tiny_patch8_56")
    assert asked[0].name == "smoke"
    with pytest.raises(ValueError, match="dataset='mnist' is not allowed"):
        pde.explorer_inputs("smoke", dataset="mnist")
