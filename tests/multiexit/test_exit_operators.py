"""What the exit machinery adds to the plain model, counted in operators (no clock): one forward at batch 1 with a
threshold no image reaches pays the exit heads and a fixed handful of operators per exit, and nothing the plain
model never runs (no gather, scatter, count or comparison on the device); a batch where images leave pays only the
gathers of the rows that stay and those that leave, with one read from the device per exit."""

import collections
import copy
import math

import pytest
import torch

from vitstudy import skipvit
from vitstudy.bench.operators import count_operators
from vitstudy.multiexit import MultiExitViT, exits

# What older decisions ran at every exit and a batch of one needs none of: the arithmetic happens on the host.
BOOKKEEPING = {
    "index_copy_",
    "index_select",
    "index_fill_",
    "amax",
    "ge",
    "sum",
    "any",
    "all",
    "argsort",
    "softmax",
    "log_softmax",
    "max",
    "item",
}
DECISION_OPERATORS = 2  # the one read of the logits to the host (tolist resolves the conj and neg bits)
HEAD_OPERATORS = 3  # the [CLS] row, the final norm on it, the classifier
FIXED_OPERATORS = 0  # the exit-block tensor is made when first read, not in the forward
# The plain model's operators the exit model need not run: timm's head dropout, an identity in eval (the exit model's
# final logits come from the normalised [CLS] row, as its exits' do).
SKIPPED = collections.Counter({"dropout": 1})


def machinery(model: MultiExitViT, x: torch.Tensor) -> collections.Counter[str]:
    """Operators of the exit model's forward beyond the plain backbone's and its exit heads' own (at most three)."""
    with torch.inference_mode():
        tokens = model.start(x)
    head = count_operators(lambda t: model.exit_heads[0](model.exit_features(t)), tokens)
    assert sum(head.values()) <= HEAD_OPERATORS, head
    plain, exiting = count_operators(model.vit, x), count_operators(model, x)
    assert plain - exiting <= SKIPPED, "the exit model skipped an operator the plain model runs"
    extra = exiting - plain
    for name, count in head.items():
        assert extra[name] >= count * len(model.exits), name
        extra[name] -= count * len(model.exits)
    return +extra  # drop the zeros


@pytest.mark.parametrize("policy", ["sample", "batch"])
@pytest.mark.parametrize("patched", [False, True])
def test_a_batch_of_one_pays_the_exit_heads_and_a_fixed_decision(tiny_vit, policy, patched):
    """Batch 1, threshold 1.0 (no image leaves): besides the heads, at most three operators per exit and one in all,
    none of them a gather, scatter, count or comparison; on a SkipViT-patched backbone too."""
    vit = (
        skipvit.apply_skipvit(copy.deepcopy(tiny_vit), skipvit.SkipViTSettings((4,), (0.5,), skip_layer=10))
        if patched
        else tiny_vit
    )
    model = MultiExitViT(vit, threshold=1.0, policy=policy).eval()
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        assert (model(x).exit_block == model.depth).all()
    extra = machinery(model, x)
    assert sum(extra.values()) <= DECISION_OPERATORS * len(model.exits) + FIXED_OPERATORS, extra
    assert not extra.keys() & BOOKKEEPING, extra


def clear_threshold(model: MultiExitViT, x: torch.Tensor) -> float:
    """A threshold between the exit-3 confidences, far from every one (so no row needs the tie check)."""
    with torch.inference_mode():
        log_conf = sorted(model(x).confidence[:, 0].log().tolist())
    middle = len(log_conf) // 2
    return math.exp((log_conf[middle - 1] + log_conf[middle]) / 2)


def test_a_batch_where_images_leave_reads_the_device_once_per_exit(tiny_vit, images, monkeypatch):
    """Batch 12, half leaving at block 3: one read from the device per exit, no device-side comparison or count,
    and per exit where images leave two gathers (the rows leaving, the rows staying), plus one to restore order."""
    model = MultiExitViT(tiny_vit, policy="sample").eval()
    model.threshold = clear_threshold(model, images)
    reads = []
    to_host = exits._to_host
    monkeypatch.setattr(exits, "_to_host", lambda values: reads.append(len(values)) or to_host(values))
    counts = count_operators(model, images)
    with torch.inference_mode():
        out = model(images)
    reached = [int((out.exit_block >= block).sum()) for block in model.exits]
    assert reads[: len(reached)] == reached and len(reads) == 2 * len(reached)  # counted, then run again
    fired = sum(1 for block in model.exits if (out.exit_block == block).any() and (out.exit_block > block).any())
    assert 0 < (out.exit_block == 3).sum() < len(images)
    assert counts["index_select"] == 2 * fired + 1, counts
    assert not counts.keys() & {"index_copy_", "amax", "ge", "sum", "argsort", "nonzero", "softmax"}, counts
