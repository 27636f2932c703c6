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
# # 00 · Quickstart: the default baseline on Fashion-MNIST
#
# Every later notebook starts from this model: a depth-12 ViT (`vitstudy_tiny_patch4_28`, registered in
# timm) trained from scratch on the real Fashion-MNIST. It is trained once per scale and then loaded from
# `data/cache/baselines/`. Change the scale in the next cell (or set `VITSTUDY_SCALE`): `smoke` (seconds),
# `quick` (the report default), `full` (whole data set, three seeds).

# %% tags=["parameters"]
import os

SCALE = os.environ.get("VITSTUDY_SCALE", "quick")

# %%
from IPython.display import Markdown, display

from vitstudy import bench, config, data, plots, report, steps, train, widgets
from vitstudy.experiments import baseline

scale = config.get_scale(SCALE)
budget = baseline.budget(scale)
print(scale.description)
scale.train

# %% [markdown]
# ## The data
# Fixed splits: the validation images are held out of the official training split with a fixed
# permutation, and the test images come from the official test split, so every run sees the same images.

# %%
splits = data.build_splits(scale.train)
splits.sizes()

# %%
images, titles = baseline.class_examples(splits.test, per_class=3)
fig = plots.image_grid(images, titles, columns=splits.num_classes)
report.save_figure(fig, "00_samples")
fig

# %% [markdown]
# The same items on **cluttered Fashion-MNIST** (`vitstudy.cluttered`, the from-scratch study's second data set,
# notebook 08): each item at a random place on a 56×56 canvas among 8×8 fragments of other items (Mnih et al.'s
# Cluttered MNIST construction). With patch 8 the canvas has the same 49 tokens; the item is on at most 16 of them,
# so a token-dropping rule has to tell item from clutter rather than find a black background.

# %%
images, titles = baseline.cluttered_examples(per_class=2)
fig = plots.image_grid(images, titles, columns=10)
report.save_figure(fig, "00_samples_cluttered")
fig

# %% [markdown]
# ## Train (or load) the baseline

# %%
result = train.baseline(scale)
result.history.round(3)

# %%
fig = plots.learning_curves(result.history)
report.save_figure(fig, "00_learning_curves")
fig

# %% [markdown]
# ## Test accuracy and inference speed
# Throughput is measured by `vitstudy.bench` on this machine: one batch of test images, the model against an
# identical copy of itself (the A/A control) in balanced rounds, with a 95% interval.

# %%
test_loader = data.make_loader(splits.test, scale.eval_batch_size, train=False)
batch, _ = next(iter(test_loader))
comparison = baseline.inference_speed(result.model, batch, budget)
speed = baseline.speed_table(comparison, len(batch))
report.save_table(speed, "00_inference_speed")
report.save_raw(bench.raw_times(comparison), "00_inference_speed")
speed

# %%
summary = baseline.summary_table(scale.name, result, speed)
report.save_table(summary, "00_baseline")
summary.T

# %%
predictions, targets = steps.predict(result.model, test_loader)
fig = plots.confusion_matrix(predictions, targets, splits.classes)
report.save_figure(fig, "00_confusion_matrix")
fig

# %%
per_class = steps.per_class_accuracy(predictions, targets, splits.classes)
report.save_table(per_class, "00_per_class_accuracy")
per_class

# %% [markdown]
# ## Browse the test predictions
# Titles read "predicted (true)"; wrong ones are red.

# %%
browser = widgets.prediction_browser(splits.test, predictions, targets, splits.classes, count=budget.page_size)

# %%
# Move the controls as a user would: a callback error here fails the notebook (and the report).
start = baseline.mistakes_page(predictions, targets, budget.page_size)
widgets.set_controls(browser, {"only_errors": True, "start": start})

# %% [markdown]
# ## What this run shows

# %%
display(Markdown(baseline.findings(summary, speed)))
