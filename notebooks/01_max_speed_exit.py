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
# # 01 · Maximum speed of an early exit (the report's Table 5.1)
#
# The report forced every image out at the exit after block 3, 6 or 9 of timm's `vit_base_patch16_224`
# and timed it on random input: the upper bound of what exiting can buy. We do the same through
# `vitstudy.multiexit.MultiExitViT(forced_exit=k)`, which runs only k blocks, and set each measured speed-up
# beside its **FLOP-ideal** value (FLOPs of the full model ÷ FLOPs of the exit path). Random weights are
# enough: timing does not depend on them.

# %% tags=["parameters"]
import os

SCALE = os.environ.get("VITSTUDY_SCALE", "quick")

# %%
from IPython.display import Markdown, display

from vitstudy import bench, config, models, reference, report
from vitstudy.experiments.multiexit import common, max_speed_exit
from vitstudy.experiments.multiexit.study import PAPER_MODEL

scale = config.get_scale(SCALE)
budget = max_speed_exit.budget(scale)  # batch and timing per scale and device: see max_speed_exit.BUDGETS
device = bench.default_device()
batch_size = budget.batch(device)
vit = models.create_model(PAPER_MODEL).eval()
print(f"{scale.name}: batch {batch_size}, {budget.timing}, device {device}")

# %% [markdown]
# ## Measured vs FLOP-ideal speed-up
# `bench.compare_models` times every model on the same batch: balanced ABBA rounds, each arm timed for a fixed
# minimum time per round, the median of per-round paired ratios with a 95% bootstrap interval, and an A/A
# control (the plain model against a copy of itself), which must read 1.00 ± 3%. `verdict` sets measured ÷
# FLOP-ideal against the target 0.97–1.03 (its interval inside 0.95–1.05); `note` flags a failed control.
#
# The report times fp32. The same table in bf16 autocast is a hand-run measurement on a machine with bf16 kernels
# (`python -m vitstudy measure bf16`, `figures/tables/19_bf16.md`), so a report run on any CPU keeps it.
# How close the plain model runs to this machine: `baseline_gflop_per_s` (forward FLOPs per image × images/s)
# against `peak_gflop_per_s`, a 2048² matmul's rate measured in this process at the timed thread count.

# %%
ours, comparison = common.table_5_1(vit, (3, 224, 224), batch_size, budget.exits, budget.timing, device)
report.save_raw(bench.raw_times(comparison), "01_max_speed_exit")
ours

# %% [markdown]
# ## Beside the report's numbers (RTX A6000)

# %%
paper = reference.load_reference("multiexit_5.1")
table = max_speed_exit.beside_paper_5_1(ours, paper)
report.save_table(table, "01_max_speed_exit")
table

# %% [markdown]
# The report's best case (3.83× at block 3) is 0.98 of the FLOP ratio we count for that path (the exit head is
# tiny next to nine blocks). Read our rows with their intervals and the A/A row: where the interval is wider
# than the gap to the target, this run cannot tell them apart.

# %%
fig = max_speed_exit.speed_bars(ours, paper)
report.save_figure(fig, "01_max_speed_exit")
fig

# %% [markdown]
# ## What this run shows

# %%
display(Markdown(max_speed_exit.findings(table)))
