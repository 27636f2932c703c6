"""Model factory for any timm Vision Transformer, and the study's small ViTs registered in timm's registry.

The small models keep depth 12 so that "block 3/6/9" (multi-exit report) and "layer 4 ... 11" (SkipViT paper)
mean what they mean in the seed documents; only width and patch size shrink to fit a laptop CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import VisionTransformer, generate_default_cfgs, register_model
from timm.models.vision_transformer import _cfg, _create_vision_transformer

from .errors import PretrainedWeightsUnavailable

# Fashion-MNIST pixel statistics over the 60k training images (0..1 scale), grey: one channel.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)

_SMALL_CFG = dict(
    num_classes=10,
    input_size=(1, 28, 28),
    crop_pct=1.0,
    interpolation="bilinear",
    mean=FASHION_MNIST_MEAN,
    std=FASHION_MNIST_STD,
    license="mit",
)

# timm's register_model reads `default_cfgs` from the module that defines the entry point.
default_cfgs = generate_default_cfgs(
    {
        "vitstudy_tiny_patch4_28": _cfg(**_SMALL_CFG),
        "vitstudy_small_patch4_28": _cfg(**_SMALL_CFG),
        # Cluttered Fashion-MNIST (vitstudy.cluttered); its data set normalises with its own measured statistics.
        "vitstudy_tiny_patch8_56": _cfg(**{**_SMALL_CFG, "input_size": (1, 56, 56)}),
    }
)


@register_model
def vitstudy_tiny_patch4_28(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Depth-12 ViT for 28x28 grey images: 7x7 = 49 patch tokens, width 96, 3 heads (~1.3 M parameters)."""
    model_args = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=96, depth=12, num_heads=3)
    return _create_vision_transformer("vitstudy_tiny_patch4_28", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vitstudy_small_patch4_28(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """Depth-12 ViT for 28x28 grey images with ViT-S's 6 heads: width 192 (~5.4 M parameters)."""
    model_args = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=192, depth=12, num_heads=6)
    return _create_vision_transformer("vitstudy_small_patch4_28", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vitstudy_tiny_patch8_56(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """The tiny model for 56x56 cluttered canvases: patch 8, so the same 7x7 = 49 tokens and the same cost."""
    model_args = dict(img_size=56, patch_size=8, in_chans=1, num_classes=10, embed_dim=96, depth=12, num_heads=3)
    return _create_vision_transformer("vitstudy_tiny_patch8_56", pretrained=pretrained, **dict(model_args, **kwargs))


SMALL_MODELS = ("vitstudy_tiny_patch4_28", "vitstudy_small_patch4_28")  # 28x28 input
CLUTTERED_MODEL = "vitstudy_tiny_patch8_56"  # 56x56 input


WEIGHTS_ENV = "VITSTUDY_WEIGHTS"  # a folder of <model name>.safetensors files, used for pretrained=True


def weights_from_folder(name: str) -> Path | None:
    """``$VITSTUDY_WEIGHTS/<name>.safetensors`` when that variable is set (offline machines keep downloaded weights
    there, and every notebook's ``pretrained=True`` finds them), else None."""
    folder = os.environ.get(WEIGHTS_ENV)
    if not folder:
        return None
    path = Path(folder) / f"{name.split('.')[0]}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"{WEIGHTS_ENV}={folder!r} has no {path.name}: save {name!r}'s weights there as .safetensors, "
            f"or unset {WEIGHTS_ENV} to use the Hugging Face hub cache"
        )
    return path


def create_model(
    name: str,
    *,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> VisionTransformer:
    """A timm Vision Transformer by registry name.

    ``weights`` loads a local ``.safetensors`` file (timm's ``pretrained_cfg_overlay=dict(file=...)``, so timm's
    own key filtering and classifier re-sizing apply). ``pretrained=True`` without a file takes it from
    ``$VITSTUDY_WEIGHTS`` when that is set (:func:`weights_from_folder`), else uses timm's hub cache
    when it already holds the weights and otherwise lets timm download them; offline, that fails with a message
    that says how to supply a file. Extra ``kwargs`` go to ``timm.create_model`` (``num_classes``, ``img_size``...).
    """
    check_model_name(name)
    if weights is None and pretrained:
        weights = weights_from_folder(name)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
        if path.suffix != ".safetensors":
            # Pickled checkpoints can run code on load; a study package should never unpickle a download.
            raise ValueError(
                f"weights file {str(path)!r} is not .safetensors: convert it first "
                "(safetensors.torch.save_file(state_dict, 'model.safetensors')) on a machine you trust"
            )
        overlay = dict(file=str(path), **_classifier_size(path, name))
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    elif pretrained:
        cached = cached_pretrained_file(name)
        if cached is not None:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=cached), **kwargs)
        else:
            try:
                model = timm.create_model(name, pretrained=True, **kwargs)
            except Exception as err:  # network errors come in many types (OSError, hub and requests errors)
                raise PretrainedWeightsUnavailable(
                    f"no pretrained weights for {name!r}: not in the Hugging Face hub cache "
                    f"({_hub_cache_dir()}) and the download failed ({type(err).__name__}: {err}). Offline, save the "
                    f"weights as a .safetensors file on a machine with internet "
                    f"(timm.create_model({name!r}, pretrained=True) then "
                    f"safetensors.torch.save_file(model.state_dict(), '{name}.safetensors')) "
                    f"and pass weights='/path/to/{name}.safetensors'."
                ) from err
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
    check_is_vit(model)
    return model


def _classifier_size(path: Path, name: str) -> dict[str, int]:
    """The file's own class count, so timm keeps its head when it matches the requested ``num_classes``.

    timm compares ``num_classes`` against the pretrained config (1000 for ImageNet models) and drops a
    mismatched head: right for an ImageNet file fine-tuned elsewhere, wrong for a user's own 10-class file.
    """
    from safetensors import safe_open

    classifier = timm.models.get_pretrained_cfg_value(name, "classifier") or "head"
    key = f"{classifier}.weight" if isinstance(classifier, str) else None
    with safe_open(str(path), framework="pt") as f:
        if key is None or key not in f.keys():
            return {}
        return {"num_classes": f.get_slice(key).get_shape()[0]}


def check_model_name(name: str) -> None:
    """Raise a ValueError naming ``name`` and close matches when timm has no such model."""
    base = name.split(".")[0]  # timm accepts "arch.pretrained_tag"
    if timm.is_model(base):
        return
    close = timm.list_models(f"*{base.split('_')[0]}*")[:8]
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise ValueError(f"unknown model {name!r}: not in timm's registry (timm.list_models()).{hint}")


def check_is_vit(model: object) -> VisionTransformer:
    """The study's methods extend timm's VisionTransformer; anything else is refused with its class named."""
    if not isinstance(model, VisionTransformer):
        raise TypeError(
            f"model of class {type(model).__name__} is not a timm VisionTransformer; vitstudy works on "
            "timm.models.VisionTransformer and its subclasses (vit_*, deit_*, vitstudy_*)"
        )
    return model


def forward_start(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Images ``[B, C, H, W]`` to the first block's input tokens ``[B, N, D]``, as timm's ``forward_features``
    starts (patch embedding, position embedding and prefix tokens, patch dropout, pre-norm): both methods
    extend timm's forward from this point."""
    return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))


def cached_pretrained_file(name: str) -> str | None:
    """Path of the model's safetensors weights in the Hugging Face hub cache, or None when not cached."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)  # resolves the default tag when none is given
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    found = try_to_load_from_cache(repo_id=hub_id, filename="model.safetensors")
    return found if isinstance(found, str) else None


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)
