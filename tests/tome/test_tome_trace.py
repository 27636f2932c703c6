"""ToMe's per-block trace (vitstudy.tome.trace_blocks): the state after every block, sources included."""

from __future__ import annotations

import torch

from vitstudy import tome


def test_trace_blocks_gives_every_blocks_state_and_ends_as_trace_forward(fresh_vit, batch):
    """One state per block, with the tokens left after it and its source; the last is trace_forward's."""
    model = tome.apply_tome(fresh_vit(depth=4), 5)
    logits, states = tome.trace_blocks(model, batch)
    assert [s.x.shape[1] for s in states] == [45, 40, 35, 30]
    assert [s.source.shape for s in states] == [(3, n, 50) for n in (45, 40, 35, 30)]
    final_logits, final = tome.trace_forward(model, batch)
    assert torch.equal(logits, final_logits) and torch.equal(states[-1].source, final.source)
    assert states[-1].counts == final.counts == [50, 45, 40, 35]


def test_trace_blocks_before_any_merge_has_no_source(fresh_vit, batch):
    """Blocks that merge nothing keep the source None (each token still one patch) until the first merge."""
    model = tome.apply_tome(fresh_vit(depth=3), [0, 0, 4])
    _, states = tome.trace_blocks(model, batch)
    assert states[0].source is None and states[1].source is None and states[2].source.shape == (3, 46, 50)
