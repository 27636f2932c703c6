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
#
# The second half asks the same after training: every rule at 1.15×, 1.3× and 1.45× FLOP ideal (the levels SkipViT's
# skip can reach) is fine-tuned from the baseline with its tokens gone, six seeds per point, paired with the baseline
# fine-tuned the same way (`vitstudy.experiments.token_rules_trained`). That protocol is this notebook's `scratch`
# scale: `python -m vitstudy trained_rules --workers 2` trains its runs (resumable, in the background), then
# `python -m vitstudy report --scale scratch --only 11` times the training steps and publishes the tables to
# `figures/scratch/`. At quick and full this notebook shows those committed tables; smoke runs both halves tiny.
# `TRAIN = False` (or `VITSTUDY_TRAIN=0`) shows the runs that finished so far without training.

# %% tags=["parameters"]
import os

SCALE = os.environ.get("VITSTUDY_SCALE", "quick")
# False (VITSTUDY_TRAIN=0): the trained curve's finished runs only ("not in", not "!=": papermill's parameter reader
# takes a second "=" for an unreadable line and says so on the console)
TRAIN = os.environ.get("VITSTUDY_TRAIN", "1") not in ("0",)
# read by vitstudy.report: the paper scale trains ViT-S/16 on ImageNet, which has no cluttered twin; scratch runs the
# trained curve only
RUNS_AT = ("smoke", "quick", "full", "scratch")

# %%
from IPython.display import Markdown, display

from vitstudy import report
from vitstudy.experiments import token_rules, token_rules_trained

OFF_THE_SHELF = SCALE in token_rules.BUDGETS  # the first half runs at smoke, quick and full
tables = {}
if OFF_THE_SHELF:
    budget = token_rules.budget(SCALE)
    print(budget.note)

# %% [markdown]
# ## Fashion-MNIST (notebook 00's baseline)

# %%
if OFF_THE_SHELF:
    table, raw = token_rules.rules_table("fashion_mnist", budget)
    tables["fashion_mnist"] = table
    report.save_table(table, "11_token_rules_fashion_mnist")
    report.save_raw(raw, "11_token_rules_fashion_mnist")
    fig = token_rules.curves_plot(table)
    report.save_figure(fig, "11_token_rules_fashion_mnist")
    display(token_rules.shown(table), fig)

# %% [markdown]
# ## Cluttered Fashion-MNIST (a baseline trained once for this notebook)

# %%
if OFF_THE_SHELF:
    table, raw = token_rules.rules_table("fashion_mnist_cluttered", budget)
    tables["fashion_mnist_cluttered"] = table
    report.save_table(table, "11_token_rules_fashion_mnist_cluttered")
    report.save_raw(raw, "11_token_rules_fashion_mnist_cluttered")
    fig = token_rules.curves_plot(table)
    report.save_figure(fig, "11_token_rules_fashion_mnist_cluttered")
    display(token_rules.shown(table), fig)

# %% [markdown]
# ## After fine-tuning: every rule trained with its tokens gone, six seeds per point
# Each (data set, rule, level, seed) fine-tunes the trained baseline for the same short budget with the rule acting
# in training, beside the baseline fine-tuned the same way; top-1 on the same test images with the rule on (as
# trained) and off; the training step of every arm timed against the baseline and its A/A copy. Runs are cached by
# fingerprint: re-running trains only what is missing.

# %%
planned = None
if SCALE in token_rules_trained.BUDGETS:
    trained = token_rules_trained.budget(SCALE)
    print(trained.note)
    planned = len(token_rules_trained.study_runs(trained))
    trained_tables, trained_raws = token_rules_trained.run_protocol(
        trained, trained.train_workers, log=print, train_missing_runs=TRAIN
    )
    for name, frame in trained_tables.items():
        report.save_table(frame, name)
    for name, frame in trained_raws.items():
        report.save_raw(frame, name)
else:
    trained_tables = token_rules_trained.committed()
    print("the committed tables of the scratch run" if trained_tables else "the trained curve is not yet run")

# %%
summary = trained_tables.get(token_rules_trained.SUMMARY_TABLE)
verdicts = trained_tables.get(token_rules_trained.VERDICTS_TABLE)
if summary is not None:
    display(token_rules_trained.shown(summary, token_rules_trained.SUMMARY_COLUMNS), verdicts)
    for dataset in summary["dataset"].unique():
        fig = token_rules_trained.curves_plot(summary, dataset)
        report.save_figure(fig, f"11_trained_{dataset}")
        display(fig)

# %% [markdown]
# ## What this run shows

# %%
if tables:
    display(Markdown(token_rules.findings(tables)))
display(Markdown(token_rules_trained.findings(trained_tables, planned)))
