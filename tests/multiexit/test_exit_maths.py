"""multiexit.exits: confidences, the exit decision, batch split / compact / scatter, on hand-made tensors."""

import pytest
import torch

from vitstudy import multiexit


def test_confidence_functions_on_uniform_and_certain_logits():
    """Uniform logits: softmax 1/C, entropy and margin 0; a dominant class: all near 1."""
    uniform, certain = torch.zeros(1, 10), torch.tensor([[30.0] + [0.0] * 9])
    torch.testing.assert_close(multiexit.max_softmax(uniform), torch.tensor([0.1]))
    torch.testing.assert_close(multiexit.entropy_confidence(uniform), torch.tensor([0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(multiexit.margin_confidence(uniform), torch.tensor([0.0]))
    for kind in multiexit.CONFIDENCES:
        assert multiexit.confidence(certain, kind).item() > 0.999


def test_exit_decision_batch_rule_uses_the_least_confident_image():
    """The batch rule fires only when min(confidence) reaches the threshold; the sample rule per image."""
    conf = torch.tensor([0.9, 0.5, 0.95])
    assert multiexit.exit_decision(conf, 0.5, "batch").all()
    assert not multiexit.exit_decision(conf, 0.6, "batch").any()
    assert multiexit.exit_decision(conf, 0.6, "sample").tolist() == [True, False, True]


def test_split_exiting_keeps_input_order():
    """Staying and leaving rows each come back in their input order."""
    leave = torch.tensor([True, False, True, False, False, True])
    stay, gone = multiexit.split_exiting(leave, int(leave.sum()))
    assert stay.tolist() == [1, 3, 4] and gone.tolist() == [0, 2, 5]


def test_compact_and_scatter_rows_round_trip():
    """Compacted rows scattered back to their origins rebuild the original rows."""
    x = torch.arange(24.0).reshape(6, 2, 2)
    rows = torch.tensor([4, 1])
    out = torch.zeros_like(x)
    multiexit.scatter_rows(out, rows, multiexit.compact(x, rows))
    assert torch.equal(out[rows], x[rows]) and out[[0, 2, 3, 5]].eq(0).all()


def test_simulate_batch_rule_decides_per_group_of_batch_size():
    """Offline, the batch rule lets a group of batch_size images leave only when all of them are confident."""
    confident, unsure = [10.0, 0.0], [0.0, 0.0]  # max-softmax ~1.0 and 0.5 at the exit
    logits = torch.tensor([[confident, confident], [confident, confident], [confident, confident], [unsure, unsure]])
    sim = multiexit.simulate(logits, (3,), 12, 0.9, "batch", batch_size=2)
    assert sim.exit_block.tolist() == [3, 3, 12, 12] and sim.exit_column.tolist() == [0, 0, 1, 1]
    assert multiexit.simulate(logits, (3,), 12, 0.9, "sample").exit_block.tolist() == [3, 3, 3, 12]


def test_simulating_the_batch_rule_needs_a_batch_size():
    """The batch rule without a batch size is refused with the value and what is allowed."""
    with pytest.raises(ValueError, match=r"batch_size=None is not allowed: expected an integer >= 1"):
        multiexit.simulate(torch.zeros(4, 2, 10), (3,), 12, 0.9, "batch")
