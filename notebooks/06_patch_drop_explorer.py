# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Which patches does SkipViT drop?
#
# Pick an image and a SkipViT setting: the explorer shows, for each drop stage, the [CLS] attention over the
# patches (the score SkipViT ranks by) and the patches it keeps (dropped ones greyed out), and the prediction
# with dropping on and off. By default the model is the cached baseline of notebook 00 (trained without
# dropping; dropping is applied at inference only) on Fashion-MNIST test images. Any image file works too: set
# `IMAGE_PATH` (and optionally `MODEL_NAME`, a timm ViT such as `vit_small_patch16_224`, with `WEIGHTS` a
# `.safetensors` file or `PRETRAINED = True` when the hub cache has them).

# %% tags=["parameters"]
import os

SCALE = os.environ.get("VITSTUDY_SCALE", "quick")
IMAGE_PATH = None  # e.g. "/path/to/photo.jpg"
MODEL_NAME = None  # None: the baseline of notebook 00; else any timm ViT name
WEIGHTS = None  # a .safetensors file for MODEL_NAME
PRETRAINED = False

# %%
import torch

from vitstudy import models, report, skipvit, train
from vitstudy.skipvit_explorer import build_explorer, explore, load_image
from vitstudy.widgets import set_controls

if MODEL_NAME is None:
    baseline = train.baseline(SCALE)
    model, classes = baseline.model, baseline.splits.classes
elif IMAGE_PATH is None:
    raise ValueError(
        f"MODEL_NAME={MODEL_NAME!r} needs IMAGE_PATH: the default data set's 28x28 grey images fit only the "
        "study's small models; set IMAGE_PATH to an image file, or MODEL_NAME = None"
    )
else:
    model, classes = models.create_model(MODEL_NAME, pretrained=PRETRAINED, weights=WEIGHTS).eval(), None
skipvit.apply_skipvit(model)

if IMAGE_PATH is None:
    test = baseline.splits.test
    shown = range(min(64, len(test)))
    images = torch.stack([test[i][0] for i in shown])
    labels = [int(test[i][1]) for i in shown]
else:
    images, labels = load_image(IMAGE_PATH, model).unsqueeze(0), None
images.shape

# %% [markdown]
# ## The paper's headline setting: drop 55% after block 6, back at block 11

# %%
fig, summary = explore(model, images[0], skipvit.TABLE1["skip_6_55_s11"], classes, labels and labels[0])
report.save_figure(fig, "06_headline_setting")
summary

# %% [markdown]
# ## Two stages (4,7 at 30%,30%): the second stage ranks only what the first kept

# %%
fig, summary = explore(model, images[0], skipvit.TABLE1["skip_4_7_30_s10"], classes, labels and labels[0])
report.save_figure(fig, "06_two_stages")
summary

# %% [markdown]
# ## Explore
# `drop after`: the first drop layer; `2nd drop`: a second one (0 = none); the ratio applies at each stage;
# `back at block`: the skip layer (mode `skip` only). An invalid combination shows what is allowed.

# %%
explorer = build_explorer(model, images, labels, classes)

# %%
# Move the controls as a user would: a callback error here fails the notebook (and the report).
set_controls(explorer, {"index": min(3, len(images) - 1), "ratio": 0.3, "second_layer": 8, "skip_layer": 10})
set_controls(explorer, {"mode": "fused", "second_layer": 0})
set_controls(explorer, {"mode": "skip", "skip_layer": 4})  # invalid on purpose: a message, not an error
