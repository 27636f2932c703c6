"""multiexit.exits: confidences, the exit decision, batch split / compact / scatter, on hand-made tensors."""

import math

import pytest
import torch

from vitstudy import multiexit
from vitstudy.multiexit import exits


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


def test_compact_keeps_the_rows_asked_for_in_their_order():
    """compact: the continuing rows, in the order given."""
    x = torch.arange(24.0).reshape(6, 2, 2)
    assert torch.equal(multiexit.compact(x, torch.tensor([4, 1])), x[[4, 1]])


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


def boundary_thresholds(conf: torch.Tensor) -> list[float]:
    """Thresholds on each confidence's boundary: the float32 value itself (a tie), its float32 neighbours, and the
    double neighbours that float32 rounds back onto it (torch compares a float32 tensor in float32)."""
    up, down = torch.nextafter(conf, torch.tensor(2.0)), torch.nextafter(conf, torch.tensor(-1.0))
    values = conf.tolist()
    doubles = [math.nextafter(v, s) for v in values for s in (math.inf, -math.inf)]
    return [t for t in [*values, *up.tolist(), *down.tolist(), *doubles] if 0.0 <= t <= 1.0]


# The most logits decided on the host, per path: none (every decision on the device), or all of them.
DECISION_PATHS = {"device": 0, "host": 10**9}


@pytest.mark.parametrize("path", DECISION_PATHS)
@pytest.mark.parametrize("classes", [2, 10, 1000])
@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0, 1000.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_log_rule_decides_exactly_like_max_softmax(classes, scale, dtype, path, monkeypatch):
    """max logit - logsumexp >= log(threshold) gives max_softmax >= threshold's answer on every row, at random
    thresholds, 0 and 1, and on the boundary of every row's own confidence (ties and one rounding either side);
    computed on the device or on the host from the logits read there."""
    monkeypatch.setattr(exits, "HOST_DECISION_VALUES", DECISION_PATHS[path])
    generator = torch.Generator().manual_seed(classes)
    logits = (torch.randn(32, classes, generator=generator) * scale).to(dtype)
    conf = multiexit.max_softmax(logits)
    host = torch.tensor([exits.host_log_max_softmax(row) for row in logits.tolist()], dtype=torch.float64)
    for log_conf in (exits.log_max_softmax(logits).double(), host):
        gap = (log_conf - conf.double().log()).abs().max().item()
        assert gap < 0.05 * exits.log_rule_band(classes)  # the band is wide enough, with room to spare
    thresholds = [0.0, 1.0, *torch.rand(16, generator=generator).tolist(), *boundary_thresholds(conf[:8])]
    for threshold in thresholds:
        expected = (conf >= threshold).tolist()
        assert exits.confident_rows(logits, threshold) == expected, threshold
        for policy in multiexit.POLICIES:
            decision = multiexit.exit_decision(conf, threshold, policy)
            leaving = exits.leaving_rows(logits, threshold, policy)
            assert leaving == decision.nonzero().flatten().tolist(), (threshold, policy)


@pytest.mark.parametrize("path", DECISION_PATHS)
def test_the_log_rule_decides_without_a_softmax_away_from_the_threshold(path, monkeypatch):
    """Rows clear of the threshold are decided in log space alone (max_softmax never runs); a tie asks max_softmax."""
    monkeypatch.setattr(exits, "HOST_DECISION_VALUES", DECISION_PATHS[path])
    logits = torch.randn(16, 10, generator=torch.Generator().manual_seed(3)) * 3
    conf = multiexit.max_softmax(logits)
    log_conf = sorted(conf.log().tolist())
    clear = [math.exp((a + b) / 2) for a, b in zip(log_conf, log_conf[1:]) if b - a > 1e-3]
    calls = []
    monkeypatch.setattr(exits, "max_softmax", lambda x: calls.append(len(x)) or multiexit.max_softmax(x))
    for threshold in clear:
        assert exits.confident_rows(logits, threshold) == (conf >= threshold).tolist()
    assert clear and not calls
    assert exits.confident_rows(logits, conf[5].item())[5] and calls == [16]


@pytest.mark.parametrize("kind", ["entropy", "margin"])
def test_other_confidences_decide_like_their_comparison(kind):
    """Entropy and margin confidences are compared with the threshold as torch compares them, ties included."""
    logits = torch.randn(32, 10, generator=torch.Generator().manual_seed(4)) * 3
    conf = multiexit.confidence(logits, kind)
    for threshold in [0.0, 1.0, 0.3, *boundary_thresholds(conf[:8])]:
        assert exits.confident_rows(logits, threshold, kind) == (conf >= threshold).tolist()


@pytest.mark.parametrize("path", DECISION_PATHS)
def test_rows_with_a_nan_or_an_infinity_are_decided_by_max_softmax(path, monkeypatch):
    """A row the log rule cannot read (nan, or an infinite logit) is decided as max_softmax decides it."""
    monkeypatch.setattr(exits, "HOST_DECISION_VALUES", DECISION_PATHS[path])
    logits = torch.tensor([[math.nan, 0.0, 1.0], [math.inf, 0.0, 1.0], [-math.inf, 0.0, 30.0], [0.0, 0.0, 0.0]])
    conf = multiexit.max_softmax(logits)
    for threshold in (0.0, 0.3, 0.9, 1.0):
        assert exits.confident_rows(logits, threshold) == (conf >= threshold).tolist(), threshold


def test_a_batch_of_one_is_decided_on_the_host_with_no_arithmetic_on_the_device(monkeypatch):
    """Ten logits at batch 1 are read once and decided in Python: neither log_softmax nor max runs on the device."""
    calls = []
    monkeypatch.setattr(exits, "log_max_softmax", lambda x: calls.append(x) or torch.zeros(len(x)))
    logits = torch.tensor([[4.0, 0.0, 1.0, 2.0, -1.0, 0.5, 0.0, 0.0, 0.0, 3.0]])
    conf = multiexit.max_softmax(logits)[0].item()
    assert exits.confident_rows(logits, conf * 0.99) == [True] and exits.confident_rows(logits, conf * 1.01) == [False]
    assert not calls
