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
# # 09 · SkipViT's two open questions: activation memory, and larger models
#
# The paper leaves two questions for future work: how much memory token dropping saves in training, and whether
# the gain holds on larger models. Memory is what a training step keeps for backward, counted exactly with
# `torch.autograd.graph.saved_tensors_hooks` (shared storages once, parameters excluded); on CUDA also the
# step's `max_memory_allocated`. Larger models: the headline 6 / 55% / skip 11 scaled with depth (ViT-L: drop
# after block 12, re-insert at 22), FLOP-ideal, memory, and the measured training-step speed-up where the CPU
# allows it (comparison engine, A/A control).

# %% tags=["parameters"]
import os

SCALE = os.environ.get("VITSTUDY_SCALE", "quick")

# %%
from IPython.display import Markdown, display

from vitstudy import report
from vitstudy.experiments.skipvit import memory_and_size

budget = memory_and_size.budget(SCALE)
table = memory_and_size.memory_table(budget)
report.save_table(table, "09_memory")
table[
    [
        "model",
        "setting",
        "saved_mib_per_image_off",
        "saved_mib_per_image_on",
        "memory_saving_pct",
        "ideal_speedup",
        "cuda_peak_mib_per_image_on",
        "note",
    ]
]

# %%
fig = memory_and_size.memory_plot(table)
report.save_figure(fig, "09_memory")
fig

# %%
sizes, raw = memory_and_size.model_size_rows(budget)
report.save_table(sizes, "09_model_size")
report.save_raw(raw, "09_model_size")
sizes

# %%
fig = memory_and_size.model_size_plot(sizes)
report.save_figure(fig, "09_model_size")
fig

# %% [markdown]
# ## What this run shows

# %%
display(Markdown(memory_and_size.findings(table, sizes)))
