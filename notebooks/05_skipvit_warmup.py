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
# # 05 · SkipViT warm-up: dropping from the first epoch or after 15% of them (the paper's Table 3)
#
# Trained from scratch, the attention that ranks the tokens is random at first. The paper trains 15 of its 100
# epochs without dropping and then drops 30% of the tokens after blocks 4 and 7 (back at block 10): 69.73% top-1
# against 67.18% without the warm-up. Here the same setting (`skipvit.TABLE3`) trains the default small model on
# Fashion-MNIST with and without a warm-up of 15% of the run's epochs, switched on by
# `train(..., on_epoch_start=skipvit.warmup_hook(W))` (the runs: `vitstudy.experiments.skipvit.warmup`). Top-1 is on the
# test split with dropping on (as trained) and, for reference, off.

# %% tags=["parameters"]
import os

SCALE = os.environ.get("VITSTUDY_SCALE", "quick")

# %%
from IPython.display import Markdown, display

from vitstudy import report, skipvit
from vitstudy.experiments.skipvit import warmup

budget = warmup.budget(SCALE)
print(budget.note)
print(skipvit.TABLE3.label, "| warm-up epochs:", budget.training.warmup_epochs, "of", budget.training.train.epochs)

# %%
runs, histories = warmup.warmup_runs(budget)
report.save_table(runs, "05_warmup_runs")
runs[["warmup_epochs", "epochs", "seed", "top1_dropping_on", "top1_dropping_off", "loop_im_s", "train_minutes"]]

# %% [markdown]
# ## Table 3: ours beside the paper's
# `top1_dropping_on`: our test top-1 with token dropping on (mean over seeds; `top1_dropping_on_std` the spread);
# `paper_top1`: the paper's ViT-S after 100 ImageNet epochs. At `quick` scale this is one short run per row: one
# seed cannot separate differences under about 1 point.

# %%
table = warmup.table_3(runs)
report.save_table(table, "05_table3")
table

# %%
fig = warmup.warmup_plot(histories)
report.save_figure(fig, "05_warmup_curves")
fig

# %% [markdown]
# ## What this run shows

# %%
display(Markdown(warmup.findings(table)))
