"""The ``paper`` scale as a user with ImageNet and downloaded weights runs it, on a CPU.

A small ImageNet-layout folder (train/ and val/, four classes of scikit-image's real photos with augmented copies,
resized by timm's transforms) and the papers' models with weights from local ``.safetensors`` files (random init:
nothing is downloaded; timm loads them through ``pretrained_cfg_overlay=dict(file=...)``), both made once per pytest
run. Without a kernel: the folder is what the paper scale reads, and the settings' errors. Through the report at smoke
sizes (``VITSTUDY_PAPER_SMOKE=1``: the paper's models, data path and recipe at the smallest sizes that run every line
of it: ``config.paper_smoke`` and the notebooks' ``paper_smoke`` budgets), one notebook of each method, what the
smoke runs of tests/test_notebooks.py never reach: 03 (multi-exit: the pretrained ViT-B/16 from the weights folder,
its features recorded on ImageNet's val/, exit heads trained on them, Table 5.3 timed at the paper's batch; 01 and
02 build and time that same study model, 02 adds analyses the smoke run of 02 covers) and 05 (SkipViT: ViT-S/16
trained from scratch on ImageNet's train/ at the paper's recipe; 04 trains its rows the same way,
``RowTraining.of(paper_smoke(...))``, and 02's joint variant trains on the same train/ path). The other notebooks'
paper branches differ from these only in their ``paper_smoke`` budgets, which their own budget tests cover.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

# One notebook of each method's paper branch (see the module docstring), with the seconds each takes for
# conftest's longest-first ordering.
PAPER_NOTEBOOKS = [
    pytest.param("03", marks=pytest.mark.slow(seconds=45)),
    pytest.param("05", marks=pytest.mark.slow(seconds=40)),
]
PAPER_MODELS = ("vit_base_patch16_224", "vit_small_patch16_224")  # the multi-exit report's and SkipViT's


def imagenet_layout(root: Path, train_per_class: int = 4, val_per_class: int = 2) -> Path:
    """``root/{train,val}/CLASS/*.JPEG``: scikit-image's photos, each copy a random crop (70-100 % of each side),
    half of them mirrored, so no two files are the same image."""
    from PIL import Image
    from skimage import data

    photos = {"cat": data.chelsea(), "astronaut": data.astronaut(), "coffee": data.coffee(), "rocket": data.rocket()}
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for name, photo in photos.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            height, width = photo.shape[:2]
            for i in range(count):
                h, w = int(height * rng.uniform(0.7, 1.0)), int(width * rng.uniform(0.7, 1.0))
                top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
                crop = photo[top : top + h, left : left + w]
                crop = crop[:, ::-1] if rng.random() < 0.5 else crop
                Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"{name}_{i}.JPEG", quality=90)
    return root


def random_weights(folder: Path, names: tuple[str, ...]) -> Path:
    """``folder/<name>.safetensors`` for each model: timm's random init, saved as a user saves downloaded weights."""
    import timm
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    for name in names:
        save_file(timm.create_model(name, pretrained=False).state_dict(), folder / f"{name}.safetensors")
    return folder


def test_imagenet_layout_is_read_by_the_paper_scale(tmp_path, monkeypatch):
    """The folder is what the paper scale reads: four classes, timm's 224-px transforms, val/ as the test split,
    at the smoke sizes."""
    from vitstudy import config
    from vitstudy.data import build_splits

    monkeypatch.setenv("VITSTUDY_IMAGENET", str(imagenet_layout(tmp_path / "imagenet")))
    monkeypatch.setenv(config.PAPER_SMOKE_ENV, "1")
    scale = config.get_scale("paper")
    assert scale.smoke_sizes and scale.train.model == "vit_small_patch16_224"
    splits = build_splits(scale.train)
    assert list(splits.classes) == ["astronaut", "cat", "coffee", "rocket"]
    assert len(splits.train) == 4 and len(splits.test) == 4 and splits.train[0][0].shape == (3, 224, 224)


def test_paper_smoke_value_is_checked(monkeypatch, tmp_path):
    """VITSTUDY_PAPER_SMOKE takes 1 or nothing; another value is one line naming it."""
    from vitstudy import config

    monkeypatch.setenv("VITSTUDY_IMAGENET", str(tmp_path))
    monkeypatch.setenv(config.PAPER_SMOKE_ENV, "yes")
    with pytest.raises(ValueError, match="VITSTUDY_PAPER_SMOKE='yes' is not allowed: expected 1 or unset"):
        config.get_scale("paper")


def _paper_inputs(folder: Path) -> None:
    imagenet_layout(folder / "imagenet")
    random_weights(folder / "weights", PAPER_MODELS)


@pytest.fixture(scope="session")
def paper_inputs(made_once) -> Path:
    """``imagenet/``, ``weights/`` and a ``multiexit/`` cache folder, made once per pytest run: each notebook is a
    test of its own, so xdist's workers run them side by side."""
    return made_once("paper-inputs", _paper_inputs)


@pytest.mark.parametrize("notebook", PAPER_NOTEBOOKS)
def test_paper_scale_runs_end_to_end_through_the_report(notebook, paper_inputs, share_cache, tmp_path, monkeypatch):
    """One method's notebook at paper scale (smoke sizes) through the report: it succeeds and writes its files, and
    the report forwards its per-cell progress."""
    from vitstudy import config, models
    from vitstudy.report import runner

    monkeypatch.setenv("VITSTUDY_IMAGENET", str(paper_inputs / "imagenet"))
    monkeypatch.setenv(models.WEIGHTS_ENV, str(paper_inputs / "weights"))
    monkeypatch.setenv(config.PAPER_SMOKE_ENV, "1")
    share_cache(paper_inputs, ["multiexit"])  # the study records its features atomically, so runs may share them
    out, lines = tmp_path / "out", []
    manifest = runner.run_report("paper", only=[notebook], out=out, log=lambda *a, **k: lines.append(a[0]))
    [name] = manifest["notebooks"]
    assert name[:2] == notebook and manifest["notebooks"][name]["files"], f"{name} wrote no files"
    assert json.loads((out / runner.MANIFEST).read_text())["scale"] == "paper"
    assert any("| cell 1/" in line for line in lines)  # the report's per-cell progress


def test_weights_folder_names_the_missing_file(monkeypatch, tmp_path):
    """A weights folder without the model's file: the error names the file it looked for."""
    from vitstudy import models

    monkeypatch.setenv(models.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="has no vit_small_patch16_224.safetensors"):
        models.create_model("vit_small_patch16_224", pretrained=True)
