import pytest
import timm
import torch

from vitstudy import models


@pytest.mark.parametrize("name", models.SMALL_MODELS)
def test_small_models_are_registered_depth_12(name):
    """The study's small ViTs are in timm's registry, depth 12, 49 patch tokens for 28x28 input."""
    model = timm.create_model(name)
    assert name in timm.list_models("vitstudy_*")
    assert len(model.blocks) == 12 and model.patch_embed.num_patches == 49
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_factory_passes_timm_kwargs():
    """Extra arguments reach timm.create_model."""
    model = models.create_model("vit_small_patch16_224", num_classes=7, img_size=32, depth=2)
    assert model.num_classes == 7 and len(model.blocks) == 2


def test_unknown_model_is_named():
    """An unknown name is refused, naming it."""
    with pytest.raises(ValueError, match="unknown model 'vit_gigantic_patch99'"):
        models.create_model("vit_gigantic_patch99")


def test_non_vit_is_refused():
    """A timm model that is not a VisionTransformer is refused, naming its class."""
    with pytest.raises(TypeError, match="ResNet is not a timm VisionTransformer"):
        models.create_model("resnet18")


def test_local_weights_file_loads(tmp_path):
    """A locally saved safetensors checkpoint loads through timm's pretrained path, weights intact."""
    from safetensors.torch import save_file

    source = timm.create_model("deit_tiny_patch16_224", num_classes=10, img_size=32, depth=2)
    path = tmp_path / "deit_tiny.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = models.create_model("deit_tiny_patch16_224", weights=path, num_classes=10, img_size=32, depth=2)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_pickled_weights_are_refused(tmp_path):
    """A .pth file is refused before anything unpickles it."""
    path = tmp_path / "model.pth"
    path.write_bytes(b"not read")
    with pytest.raises(ValueError, match="not .safetensors"):
        models.create_model("deit_tiny_patch16_224", weights=path)


def test_hub_cache_is_used(tmp_path, monkeypatch):
    """Weights already in the Hugging Face cache are found and loaded without a download."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    hub_id = timm.models.get_pretrained_cfg("deit_tiny_patch16_224").hf_hub_id
    repo = tmp_path / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    source = timm.create_model("deit_tiny_patch16_224")
    save_file(source.state_dict(), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    loaded = models.create_model("deit_tiny_patch16_224", pretrained=True)
    assert torch.equal(loaded.head.weight, source.head.weight)


def test_offline_without_weights_says_how(tmp_path, monkeypatch):
    """Offline, with nothing cached and no file, the error explains how to supply a file."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        models.PretrainedWeightsUnavailable, match=r"weights='/path/to/deit_tiny_patch16_224.safetensors'"
    ):
        models.create_model("deit_tiny_patch16_224", pretrained=True)
