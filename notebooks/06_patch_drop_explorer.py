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
# # 06 · Which patches does SkipViT drop, and which does ToMe merge?
#
# Pick an image and a SkipViT setting: the explorer shows, for each drop stage, the [CLS] attention over the
# patches (the score SkipViT ranks by) and the patches it keeps (dropped ones greyed out), and the prediction
# with token dropping on and off (`prediction_dropping_on` / `prediction_dropping_off`). ToMe is a further rule
# in the same explorer: it drops nothing but merges `r` tokens in every block, and the explorer colours the patches
# by the token they ended in (ToMe's own way to show its merges). By default the model is
# the cached baseline of notebook 00 (trained without dropping; dropping is applied at inference only) on
# Fashion-MNIST test images. Any image file works too: set `IMAGE_PATH` (and optionally `MODEL_NAME`, a timm ViT
# such as `vit_small_patch16_224`, with `WEIGHTS` a `.safetensors` file or `PRETRAINED = True` when the hub cache
# has them); `vitstudy.experiments.skipvit.patch_drop_explorer.explorer_inputs` makes the choice.
# `DATASET = "fashion_mnist_cluttered"` shows cluttered Fashion-MNIST instead (each item among fragments of other
# items on a 56×56 canvas, `vitstudy.cluttered`), with the same recipe trained on it (once, then cached: a few
# minutes at `quick`): there the [CLS] ranking has to tell the item from clutter, not from a black background.

# %% tags=["parameters"]
import os

SCALE = os.environ.get("VITSTUDY_SCALE", "quick")
IMAGE_PATH = None  # e.g. "/path/to/photo.jpg"
MODEL_NAME = None  # None: the baseline of notebook 00; else any timm ViT name
WEIGHTS = None  # a .safetensors file for MODEL_NAME
PRETRAINED = False
DATASET = "fashion_mnist"  # or "fashion_mnist_cluttered"

# %%
from vitstudy import report, skipvit
from vitstudy.experiments.skipvit import patch_drop_explorer
from vitstudy.widgets import set_controls

model, images, labels, classes = patch_drop_explorer.explorer_inputs(
    SCALE, IMAGE_PATH, MODEL_NAME, WEIGHTS, PRETRAINED, dataset=DATASET
)
label = labels[0] if labels else None
images.shape

# %% [markdown]
# ## The paper's headline setting: drop 55% after block 6, back at block 11

# %%
headline = skipvit.explore(model, images[0], skipvit.TABLE1["skip_6_55_s11"], classes, label)
report.save_figure(headline.figure, "06_headline_setting")
headline

# %% [markdown]
# ## Two stages (4,7 at 30%,30%): the second stage ranks only what the first kept

# %%
view = skipvit.explore(model, images[0], skipvit.TABLE1["skip_4_7_30_s10"], classes, label)
report.save_figure(view.figure, "06_two_stages")
view

# %% [markdown]
# ## ToMe as the rule: the largest r every block can merge; colour: patches merged into one token, after the
# middle block and after the last (a patch still alone stays clear)

# %%
r = patch_drop_explorer.largest_fitting_r(model)
merges = patch_drop_explorer.explore_merges(model, images[0], r, len(model.blocks) // 2, classes, label)
report.save_figure(merges.figure, "06_tome_merges")
merges

# %% [markdown]
# ## Explore
# `drop after`: the first drop layer; `2nd drop`: a second one (0 = none); the ratio applies at each stage;
# `back at block`: the skip layer (mode `skip` only). Mode `tome` swaps those sliders for ToMe's: `r`, the tokens
# merged in every block, and the block whose merges to show. An invalid combination shows what is allowed.

# %%
explorer = patch_drop_explorer.explorer_widget(model, images, labels, classes)

# %%
# Move the controls as a user would: a callback error here fails the notebook (and the report).
set_controls(explorer, {"index": min(3, len(images) - 1), "ratio": 0.3, "second_layer": 8, "skip_layer": 10})
set_controls(explorer, {"mode": "fused", "second_layer": 0})
set_controls(explorer, {"mode": "tome", "r": 1, "after_block": 3})
set_controls(explorer, {"r": model.patch_embed.num_patches // 2})  # too large for the later blocks: a message
set_controls(explorer, {"mode": "skip", "skip_layer": 4})  # invalid on purpose: a message, not an error

# %% [markdown]
# ## What this run shows

# %%
print(skipvit.readout(headline.summary))
print(patch_drop_explorer.readout(merges.summary))
