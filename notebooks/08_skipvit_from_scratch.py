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
# # 08 · SkipViT trained from scratch, with seeds: do the paper's accuracy claims hold?
#
# The paper's claims are about training from scratch: 6 / 55% / skip 11 keeps the baseline's top-1 (−0.01),
# EViT's fused token at 45% loses 1.78 points, and a warm-up of 15% of the epochs is worth +2.55 points for
# 4,7 / 30% / skip 10. Here every row trains from random weights with the same recipe and six seeds
# (`vitstudy.experiments.skipvit.from_scratch`), plus two rows of ours: plain dropping (no skip) and timm's random
# PatchDropout at the headline row's FLOPs. Two data sets: Fashion-MNIST (items on black, so many tokens are
# blank) and cluttered Fashion-MNIST (`vitstudy.cluttered`: each item at a random place on a 56×56 canvas among
# fragments of other items, 49 tokens, at least 33 of them without the item), where choosing tokens matters.
# Each (data set, row, seed) is a resumable run in the cache, or taken from the committed per-run table when its
# fingerprint matches: re-running this notebook trains only what is missing. Run it with
# `python -m vitstudy report --scale scratch --only 08` (writes `figures/scratch/`); it does not run in the quick
# report. `TRAIN = False` (or `VITSTUDY_TRAIN=0`) shows the runs that finished so far without training.

# %% tags=["parameters"]
import os

SCALE = os.environ.get("VITSTUDY_SCALE", "scratch")
# False (VITSTUDY_TRAIN=0): the finished runs only ("not in", not "!=": papermill's parameter reader takes a second
# "=" for an unreadable line and says so on the console)
TRAIN = os.environ.get("VITSTUDY_TRAIN", "1") not in ("0",)
RUNS_AT = ("smoke", "scratch")  # read by vitstudy.report: this study runs at no other scale

# %%
import pandas as pd
from IPython.display import Markdown, display

from vitstudy import report
from vitstudy.experiments.skipvit import from_scratch

budget = from_scratch.budget(SCALE)
training = budget.training
print(budget.note, "| seeds:", training.seeds, "| warm-up epochs:", training.warmup_epochs, "of", training.train.epochs)
rates = [from_scratch.matched_patch_drop_rate(budget, dataset=dataset) for dataset in budget.study_datasets]
report.save_table(pd.DataFrame(rates), "08_patch_dropout_rate")
missing = from_scratch.missing_runs(budget)
print("runs:", len(from_scratch.study_runs(budget)), "| still to train:", len(missing))

# %%
# Missing runs train side by side, one single-thread process per core (one process on a GPU).
runs, histories = from_scratch.scratch_runs(
    budget, log=print, workers=from_scratch.default_workers(), train_missing_runs=TRAIN
)
report.save_table(runs, "08_runs")
report.save_raw(histories, "08_histories")

# %% [markdown]
# ## What the study cost, and where it trained
# Summed training minutes per data set and machine (`trained_on`, recorded since the cluttered study began; the
# earlier runs say "not recorded"). Each run's minutes are its worker's wall time, so a run that was paused (to
# time something else on the same cores) counts its pause.

# %%
cost = from_scratch.training_time(runs)
report.save_table(cost, "08_training_time")
cost

# %% [markdown]
# ## Per data set and row: mean ± std over seeds, paired difference to the baseline (95% interval), dropping on and off

# %%
summary = from_scratch.scratch_summary(runs)
report.save_table(summary, "08_summary")
summary

# %% [markdown]
# ## One verdict per claim and data set
# `resolvable` is the half-width of the interval: the smallest difference this protocol can tell from zero;
# `seeds_to_resolve`, for a claim it cannot tell, the seeds that would tell it at the spread measured.

# %%
verdicts = from_scratch.claim_verdicts(runs)
report.save_table(verdicts, "08_verdicts")
verdicts[["dataset", "claim", "paper_diff", "diff", "diff_low", "diff_high", "resolvable", "verdict"]]

# %%
for dataset in budget.study_datasets:
    fig = from_scratch.scratch_plot(runs, summary, dataset)
    report.save_figure(fig, f"08_from_scratch_{dataset}")
    display(fig)

# %% [markdown]
# ## What this run shows

# %%
planned = len(from_scratch.study_runs(budget))
display(Markdown(from_scratch.findings(verdicts, finished=len(runs), planned=planned)))
