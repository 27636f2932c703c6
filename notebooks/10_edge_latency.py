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
# # 10 · Early exit on the edge: latency at batch 1
#
# The report's motivation is edge devices: one image at a time, where an image that leaves after block 3 should
# return in a quarter of the time. Our other speed numbers are throughput at batch 256. Here each test image runs
# alone through the plain model and through the per-sample exit at notebook 02's operating point (chosen on the
# validation split), and we ask what users of such projects ask first: does it save time at batch 1, end to end,
# or only in FLOP counts? Then the same operating point at batch 8, 64 and 256; ViT-B/16 at batch 1; both methods
# (exit and SkipViT) at once; and the field's published numbers beside ours.

# %% tags=["parameters"]
import os

SCALE = os.environ.get("VITSTUDY_SCALE", "quick")

# %%
from IPython.display import Markdown, display

from vitstudy import bench, config, models, report
from vitstudy.experiments.multiexit import common, edge_latency
from vitstudy.experiments.multiexit.study import PAPER_MODEL, prepare

scale = config.get_scale(SCALE)
budget = edge_latency.budget(scale)  # images timed at batch 1, batch sizes, timing: see edge_latency.BUDGETS
device = bench.default_device()
study = prepare(scale, head_epochs=common.real_data_budget(scale).head_epochs)
point = common.choose_operating_point(study, max_loss=common.real_data_budget(scale).max_loss)
print(f"{scale.name}: {budget.latency_images} images at batch 1, device {device}; operating point {point}")

# %% [markdown]
# ## Latency per image at batch 1
# Every arm runs each test image alone; the arms alternate image by image (A B C D, then D C B A), the first
# images run untimed first, and each call is timed on its own (`timeit`, garbage collector off). The speed-up of
# means and of medians over the plain model carries a 95% bootstrap interval over images, paired by image. The
# A/A row is a second copy of the plain model, timed the same way. "exit machinery, never fires" is the same exit
# model with a threshold of 1.0: every image runs to the end, so its speed-up is the exits' overhead alone.
# `operators_per_image` is counted, not timed (an exit arm on one image per exit block, weighted by how many leave
# there), and `operator_ideal_speedup` is plain's count over the arm's: the speed-up where every operator costs the
# same, as it nearly does for a model this small at batch 1.

# %%
latency, histogram, run = edge_latency.batch1_latency(study, point, budget, device)
report.save_raw(bench.raw_latencies(run), "10_batch1_latency")
report.save_table(latency, "10_batch1_latency")
latency[
    [
        "arm",
        "setting",
        "mean_ms",
        "median_ms",
        "p90_ms",
        "p99_ms",
        "speedup",
        "speedup_low",
        "speedup_high",
        "speedup_of_medians",
        "ideal_speedup",
        "exited_pct",
        "overhead_pct",
        "operators_per_image",
        "operator_ideal_speedup",
        "verdict",
        "note",
    ]
]

# %% [markdown]
# Which exit each timed image took (the FLOP ideal above is this histogram's):

# %%
report.save_table(histogram, "10_exit_histogram")
histogram

# %% [markdown]
# ## Where batch 1 spends the exits' time
# `torch.profiler` self time per call of the plain model and the never-firing exit on one image: the operators only
# the exit path runs are its exit heads (the [CLS] row, the final norm on it, the classifier) and the one read of
# their logits to the host, where the decision (max logit − logsumexp against the log of the threshold) is summed
# in Python; the profile cannot show that Python time, the timed table above does.

# %%
overheads = edge_latency.batch1_overheads(study, point, budget.profile_calls)
report.save_raw(overheads, "10_batch1_overheads", kind="profiles")
overhead = edge_latency.overhead_summary(overheads)  # ms per call of each arm, and the exit-only operators
print(overhead)
overheads.head(15)

# %% [markdown]
# ## The same operating point across batch sizes
# One `bench.compare_models` comparison per batch size (balanced rounds, paired ratios, an A/A control each) on
# the first b test images; `ideal_speedup` is the FLOP ideal of that batch's own exits. A small model at a small
# batch pays about the same for each operator whatever its rows, and the rows that stay after an exit still run
# every later block's operators, so beside the FLOP ideal each arm's operators per image on the batch are counted
# and `operator_ideal_speedup` (plain's over the exit's) says what a call bound by operator count can gain.

# %%
sweep, sweep_raw = edge_latency.batch_sweep(study, point, budget.sweep_batches, budget.sweep_timing, device)
report.save_raw(sweep_raw, "10_batch_sweep")
report.save_table(sweep, "10_batch_sweep")
sweep[
    [
        "batch_size",
        "arm",
        "ms_per_call",
        "images_per_s",
        "speedup",
        "speedup_low",
        "speedup_high",
        "ideal_speedup",
        "measured_over_ideal",
        "operators_per_image",
        "operator_ideal_speedup",
        "verdict",
        "note",
    ]
]

# %% [markdown]
# ## ViT-B/16 at 224, batch 1
# No ImageNet here, so as Table 5.1 does: random input, every image forced out after one exit (random weights:
# timing does not depend on them). `latency_ms` is the median time per call over rounds.

# %%
vit_b = models.create_model(PAPER_MODEL).eval()
vit_b_table, comparison = edge_latency.vit_b_batch1(
    vit_b, (3, 224, 224), budget.vit_b_exits, budget.vit_b_timing, device
)
report.save_raw(bench.raw_times(comparison), "10_vit_b_batch1")
report.save_table(vit_b_table, "10_vit_b_batch1")
vit_b_table[
    [
        "setting",
        "latency_ms",
        "speedup",
        "speedup_low",
        "speedup_high",
        "ideal_speedup",
        "measured_over_ideal",
        "verdict",
        "note",
    ]
]

# %% [markdown]
# ## Both methods at once
# The per-sample exit on a backbone with SkipViT's dropping switched on at inference (the headline row, on the
# same trained baseline, never trained with dropping). The exits must lie outside SkipViT's drop region (block 6
# to block 11 for the headline), so only the operating point's exits before it are kept. `product_of_ideals` is
# the exit's FLOP ideal times SkipViT's; `ideal_speedup` of the `both` row counts the composed path itself.

# %%
composition, comparison = edge_latency.composition_table(
    study, point, budget.skipvit_preset, budget.composition_batch, budget.composition_timing, device
)
report.save_raw(bench.raw_times(comparison), "10_composition")
report.save_table(composition, "10_composition")
composition[
    [
        "arm",
        "setting",
        "speedup",
        "speedup_low",
        "speedup_high",
        "ideal_speedup",
        "product_of_ideals",
        "measured_over_product",
        "top1_loss",
        "verdict",
        "note",
    ]
]

# %% [markdown]
# ## Beside the field
# Published numbers as their papers state them (what each measures: timed or counted, model, data set), then ours
# in columns of their own: the two blocks are never in the same column.

# %%
loss = study.top1_loss_interval(point["variant"], point["exits"], point["threshold"], "sample")
ours = edge_latency.our_field_rows(latency, sweep, composition, loss, scale.train.model, scale.train.dataset)
field = edge_latency.beside_field(edge_latency.load_field(), ours)
report.save_table(field, "10_beside_the_field")
field

# %% [markdown]
# ## What this run shows

# %%
display(Markdown(edge_latency.findings(latency, sweep, vit_b_table, composition, overhead)))
