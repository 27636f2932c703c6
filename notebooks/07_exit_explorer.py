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
# # 07 · Exit explorer
#
# Move the threshold and pick a variant, an exit set and a policy: the grid shows test images labelled with the
# block they left after, the confidence they had there, and whether the prediction was right (wrong in red);
# the histogram shows where the whole test set leaves; the title gives top-1 and the FLOP-ideal speed-up.
# Everything is computed offline from the features notebook 02 recorded (`vitstudy.multiexit.explore`), so the
# widget answers at once. The variants are notebook 02's: the heads fitted on the frozen backbone and `joint`, the
# exits trained with the backbone (its run and features cached by notebook 02; trained here if absent).

# %% tags=["parameters"]
import os

SCALE = os.environ.get("VITSTUDY_SCALE", "quick")

# %%
from vitstudy import config, multiexit, report
from vitstudy.experiments.multiexit import common
from vitstudy.experiments.multiexit.study import prepare
from vitstudy.widgets import set_controls

scale = config.get_scale(SCALE)
budget = common.real_data_budget(scale)  # notebook 02's: the same heads and operating point
study = prepare(scale, head_epochs=budget.head_epochs)
common.add_joint_variant(study, common.joint_budget(scale))  # notebook 02's joint run, from the cache
print(f"{scale.name}: plain model test top-1 {study.plain_top1:.2f}%, variants {', '.join(study.variants)}")

# %% [markdown]
# ## One setting, saved for the report
# The per-sample policy at the operating point notebook 02 chose on the validation split, over every variant
# (`joint` included).

# %%
point = common.choose_operating_point(study, max_loss=budget.max_loss)
view = multiexit.explore(study, point["variant"], point["exits"], "sample", point["threshold"])
report.save_figure(view.figure, "07_exit_explorer")
view

# %% [markdown]
# ## The explorer

# %%
explorer = multiexit.explorer_widget(study)

# %%
# Move the controls as a user would: a callback error here fails the notebook (and the report).
set_controls(explorer, {"policy": "batch", "threshold": 0.99})
set_controls(explorer, {"variant": "joint", "exits": "3,6,9", "policy": "sample", "threshold": 0.95})
set_controls(explorer, {"variant": "finetune", "exits": "3", "policy": "sample", "threshold": 0.5, "start": 24}).summary

# %% [markdown]
# ## What this run shows

# %%
print(multiexit.readout(view.summary))
