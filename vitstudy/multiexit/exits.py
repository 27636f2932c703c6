"""The exit maths as pure tensor functions: confidence, exit decision, batch compaction, scatter-back.

``MultiExitViT`` (``model``) strings these together in its forward (:class:`ExitRule`, the decision with the
fewest operators); :func:`simulate` replays the same decision on recorded logits, so any threshold, policy or batch
size can be evaluated without running the backbone again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..config import check, check_choice

POLICIES = ("batch", "sample")
CONFIDENCES = ("softmax", "entropy", "margin")


def max_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Highest class probability, ``[B, C] -> [B]`` in [1/C, 1] (the report's confidence)."""
    return logits.float().softmax(-1).amax(-1)


def entropy_confidence(logits: torch.Tensor) -> torch.Tensor:
    """``1 - H(p) / log C``, ``[B, C] -> [B]`` in [0, 1]: 1 for a one-hot prediction, 0 for a uniform one."""
    log_p = logits.float().log_softmax(-1)
    classes = logits.shape[-1]
    if classes < 2:
        return torch.ones(logits.shape[:-1], device=logits.device)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return (1 - entropy / math.log(classes)).clamp(0, 1)


def margin_confidence(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 probability, ``[B, C] -> [B]`` in [0, 1]."""
    if logits.shape[-1] < 2:
        return torch.ones(logits.shape[:-1], device=logits.device)
    top2 = logits.float().softmax(-1).topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


CONFIDENCE_FNS = {"softmax": max_softmax, "entropy": entropy_confidence, "margin": margin_confidence}


def confidence(logits: torch.Tensor, kind: str = "softmax") -> torch.Tensor:
    """Confidence of each row of ``logits`` ``[..., C] -> [...]`` by name (``CONFIDENCES``)."""
    return CONFIDENCE_FNS[check_choice("confidence", kind, CONFIDENCES)](logits)


def exit_decision(conf: torch.Tensor, threshold: float, policy: str) -> torch.Tensor:
    """Which images leave at this exit, ``[B] -> [B]`` bool.

    ``sample``: each image whose confidence reaches the threshold. ``batch``: all of them when the least
    confident one does (the report continues while ``min(conf) < threshold``), else none.
    """
    confident = conf >= threshold
    if policy == "batch":
        return confident.all().expand_as(confident)
    return confident


def log_max_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Log of the highest class probability, ``[B, C] -> [B]``: max logit − logsumexp.

    Read off ``log_softmax`` at the top class, where the logit minus the max is exactly 0, so nothing cancels
    however large the logits are; two operators where ``max_softmax`` and a comparison take three.
    """
    logits = logits if logits.dtype == torch.float32 else logits.float()
    return logits.log_softmax(-1).max(-1).values


def log_rule_band(classes: int) -> float:
    """How far :func:`log_max_softmax` (or :func:`host_log_max_softmax`, closer to exact) may sit from the log of
    :func:`max_softmax`, as float32 computes them.

    Each sums ``classes`` exponentials in its own order (a relative error below ``classes + 2`` float32 epsilons
    each, the logarithm and the division adding one more); ``4 * (classes + 8)`` epsilons bound the gap with room to
    spare (on random logits of 2 to 1000 classes at any scale the gap stays under 5 % of it; a test pins that).
    Within the band the log rule cannot tell on which side of the threshold ``max_softmax`` falls.
    """
    return 4 * (classes + 8) * torch.finfo(torch.float32).eps


# Logits of at most this many values are decided on the host: reading them is one transfer (tolist's two dispatches
# only resolve the conj and neg bits), and summing a few dozen exponentials in Python costs less than the device's
# log_softmax and max. Past it (a large batch, or a thousand classes) the device's two operators are the cheaper.
HOST_DECISION_VALUES = 128


def _to_host(values: torch.Tensor) -> list:
    """The one read from the device of a decision: ``[B]`` to floats, ``[B, C]`` to rows of floats."""
    # item() is one operator where tolist() dispatches two: worth the branch for a single value.
    return [values.item()] if values.dim() == 1 and values.numel() == 1 else values.tolist()


def host_log_max_softmax(row: Sequence[float]) -> float:
    """:func:`log_max_softmax` of one row of logits read to the host, in double precision: ``-log sum exp(l - max)``.

    nan when the row holds a nan or an infinity (the caller then asks :func:`max_softmax`).
    """
    top = max(row)
    return -math.log(sum(math.exp(value - top) for value in row))


@dataclass(frozen=True)
class ExitRule:
    """The exit decision at one setting, its constants worked out once (a forward decides with it at every exit).

    ``threshold32`` is the threshold as a float32 confidence is compared with it; ``log_threshold`` its log, which
    the ``softmax`` confidence is compared with in log space; ``band`` is :func:`log_rule_band` for ``classes``.
    """

    policy: str
    kind: str
    classes: int
    threshold32: float
    log_threshold: float
    band: float

    @classmethod
    def of(cls, threshold: float, policy: str, kind: str, classes: int) -> ExitRule:
        threshold32 = float(np.float32(threshold))  # what a float32 tensor is compared with
        log_threshold = math.log(threshold32) if threshold32 > 0 else -math.inf
        return cls(policy, kind, classes, threshold32, log_threshold, log_rule_band(classes))

    def confident_rows(self, logits: torch.Tensor) -> list[bool]:
        """Per row of ``logits`` ``[B, C]``: does its confidence reach the threshold? One read from the device.

        The answer is ``confidence(logits, kind) >= threshold`` as torch compares it (a float32 confidence against
        the threshold rounded to float32), row for row, ties included. ``softmax`` is decided in log space without
        a softmax: ``log_max_softmax >= log(threshold)``, on the host from the logits themselves when they are few
        (:data:`HOST_DECISION_VALUES`: no operator beyond the read), else on the device; a row within the band of
        the threshold (a tie, or rounding's width from one) is decided by ``max_softmax`` itself, at the cost of a
        second read.
        """
        if self.kind != "softmax":
            return [value >= self.threshold32 for value in _to_host(confidence(logits, self.kind))]
        if logits.numel() <= HOST_DECISION_VALUES:
            log_confidence = [host_log_max_softmax(row) for row in _to_host(logits)]
        else:
            log_confidence = _to_host(log_max_softmax(logits))
        band, log_threshold = self.band, self.log_threshold
        confident, unsure = [], []
        for row, value in enumerate(log_confidence):
            gap = value - log_threshold
            confident.append(gap > band)
            if not abs(gap) > band:  # not >: a nan gap is unsure too
                unsure.append(row)
        if unsure:
            reference = _to_host(max_softmax(logits))
            for row in unsure:
                confident[row] = reference[row] >= self.threshold32
        return confident

    def leaving_rows(self, logits: torch.Tensor) -> list[int]:
        """The rows of ``logits`` ``[B, C]`` that leave at this exit, in order: :func:`exit_decision` on
        :func:`confidence`, decided on the host from :meth:`confident_rows` (no comparison or count on the device).
        """
        confident = self.confident_rows(logits)
        if self.policy == "batch":
            return list(range(len(confident))) if all(confident) else []
        return [row for row, leaves in enumerate(confident) if leaves]


def confident_rows(logits: torch.Tensor, threshold: float, kind: str = "softmax") -> list[bool]:
    """:meth:`ExitRule.confident_rows` at ``threshold``: per row of ``logits`` ``[B, C]``, does its confidence reach
    it (as torch compares a float32 confidence with it)?"""
    return ExitRule.of(threshold, "sample", kind, logits.shape[-1]).confident_rows(logits)


def leaving_rows(logits: torch.Tensor, threshold: float, policy: str, kind: str = "softmax") -> list[int]:
    """:meth:`ExitRule.leaving_rows` at ``threshold`` and ``policy``: the rows of ``logits`` ``[B, C]`` that leave at
    this exit, in order."""
    return ExitRule.of(threshold, policy, kind, logits.shape[-1]).leaving_rows(logits)


def compact(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The batch rows that continue, ``[B, N, C] -> [b, N, C]`` (one ``index_select``)."""
    return x.index_select(0, rows)


# ----------------------------------------------------------------------------------------------------------
# Boundary checks


def check_threshold(threshold: float) -> float:
    check(isinstance(threshold, int | float) and 0.0 <= threshold <= 1.0, "threshold", threshold, "a number in [0, 1]")
    return float(threshold)


def check_exits(exits: Iterable[int], depth: int) -> tuple[int, ...]:
    exits = tuple(exits)
    check(bool(exits), "exits", exits, f"at least one block in 1...{depth - 1}")
    in_range = all(isinstance(b, int) and 1 <= b <= depth - 1 for b in exits)
    allowed = f"blocks in 1...{depth - 1} (the model has {depth} blocks; exiting after the last one is the plain model)"
    check(in_range, "exits", exits, allowed)
    check(len(set(exits)) == len(exits), "exits", exits, "each block at most once")
    return tuple(sorted(exits))


# ----------------------------------------------------------------------------------------------------------
# The same decision, replayed offline on recorded logits


@dataclass
class Simulation:
    """Per image: the prediction, the block it left after (depth = the end) and the column of its exit."""

    predictions: torch.Tensor  # [N]
    exit_block: torch.Tensor  # [N]
    exit_column: torch.Tensor  # [N] index into exits + (final,)


def simulate(
    logits: torch.Tensor,
    exits: Sequence[int],
    depth: int,
    threshold: float,
    policy: str,
    confidence_kind: str = "softmax",
    batch_size: int | None = None,
) -> Simulation:
    """What ``MultiExitViT`` would do, from recorded logits ``[N, exits + 1, C]`` (last column: the end).

    ``sample`` decides per image; ``batch`` per consecutive group of ``batch_size`` images in recorded order
    (the last group may be smaller, as a loader's last batch is).
    """
    check_threshold(threshold)
    check_choice("policy", policy, POLICIES)
    count, columns = logits.shape[0], logits.shape[1]
    confident = confidence(logits[:, :-1], confidence_kind) >= threshold  # [N, exits]
    if policy == "batch":
        ok = batch_size is not None and batch_size >= 1
        check(ok, "batch_size", batch_size, "an integer >= 1 for policy 'batch'")
        groups = torch.arange(count) // batch_size  # [N] batch of each image
        # A batch leaves at an exit when all its images are confident there: the min over the batch.
        per_batch = torch.ones(int(groups[-1]) + 1, columns - 1, dtype=torch.long)
        per_batch.scatter_reduce_(0, groups[:, None].expand_as(confident), confident.long(), reduce="amin")
        confident = per_batch[groups].bool()
    first = torch.where(confident.any(1), confident.long().argmax(1), torch.full((count,), columns - 1))
    blocks = torch.tensor([*exits, depth])
    predictions = logits[torch.arange(count), first].argmax(-1)
    return Simulation(predictions, blocks[first], first)
