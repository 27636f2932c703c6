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
# # 11 · Token rules at equal cost: which one keeps the most top-1 at the same measured speed?
#
# The field's question, off the shelf: the trained baseline is used as it is, and five rules remove tokens from it
# without any training — SkipViT's skip (drop after block 6 by [CLS] attention, back at block 11), EViT's fused
# token (dropped after block 6's attention, one fused token in their place), plain dropping after block 6, ToMe
# (similar tokens merged in every block; "no training needed" is what this checks) and PatchDropout (random
# patches removed before block 1, timm's layer kept active at inference with a fixed seed). Each rule is set to
# five FLOP-ideal speed-ups from 1.1× up to 2.0× or the most it can reach at its layers, every setting is
# evaluated on the whole test set and timed against the baseline and its A/A copy in one comparison, on
# Fashion-MNIST and on cluttered Fashion-MNIST.

# %% tags=["parameters"]
import os

SCALE = os.environ.get("VITSTUDY_SCALE", "quick")
# read by vitstudy.report: the paper scale trains ViT-S/16 on ImageNet, which has no cluttered twin
RUNS_AT = ("smoke", "quick", "full")

# %%
from IPython.display import Markdown, display

from vitstudy import report
from vitstudy.experiments import token_rules

budget = token_rules.budget(SCALE)
print(budget.note)
tables = {}

# %% [markdown]
# ## Fashion-MNIST (notebook 00's baseline)

# %%
table, raw = token_rules.rules_table("fashion_mnist", budget)
tables["fashion_mnist"] = table
report.save_table(table, "11_token_rules_fashion_mnist")
report.save_raw(raw, "11_token_rules_fashion_mnist")
token_rules.shown(table)

# %%
fig = token_rules.curves_plot(table)
report.save_figure(fig, "11_token_rules_fashion_mnist")
fig

# %% [markdown]
# ## Cluttered Fashion-MNIST (a baseline trained once for this notebook)

# %%
table, raw = token_rules.rules_table("fashion_mnist_cluttered", budget)
tables["fashion_mnist_cluttered"] = table
report.save_table(table, "11_token_rules_fashion_mnist_cluttered")
report.save_raw(raw, "11_token_rules_fashion_mnist_cluttered")
token_rules.shown(table)

# %%
fig = token_rules.curves_plot(table)
report.save_figure(fig, "11_token_rules_fashion_mnist_cluttered")
fig

# %% [markdown]
# ## What this run shows

# %%
display(Markdown(token_rules.findings(tables)))
