"""ToMe's token maths as pure tensor functions: bipartite soft matching, size-weighted merging, source tracking,
the r schedule and the token counts it gives.

Shapes: B images, N tokens, C channels, D the matching metric's channels (a head's key size), P protected prefix
tokens ([CLS], distillation, registers), N₀ the tokens before the first merge.

Written after facebookresearch/ToMe (tome/merge.py, tome/utils.py); tests/tome/test_tome_reference.py checks these
functions against a transcription of that code on the same tensors. Two generalisations: every prefix token is
protected (ToMe protects [CLS] and a distillation token), and the unmerged tokens always keep their original order
(ToMe sorts them only when there is a [CLS] token; attention does not depend on the order, the source map does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Merge = Callable[..., torch.Tensor]  # Matching.merge: x [B, N, C] -> [B, N - r, C], with a scatter_reduce mode


@dataclass(frozen=True)
class Matching:
    """One layer's bipartite matching: the even-indexed tokens (set A) against the odd-indexed ones (set B).

    Indices count within A or within B: ``unmerged`` [B, N_A - r, 1] the A tokens that stay, in original order;
    ``merged`` [B, r, 1] the A tokens merged away; ``destination`` [B, r, 1] the B token each of those joins.
    ``protected_a`` / ``protected_b``: how many prefix tokens fall in A (the first unmerged ones) and in B (the first
    B tokens), which :meth:`merge` puts first, in their original order.
    """

    unmerged: torch.Tensor
    merged: torch.Tensor
    destination: torch.Tensor
    protected_a: int
    protected_b: int

    @property
    def r(self) -> int:
        """How many tokens this matching removes."""
        return self.merged.shape[1]

    def merge(self, x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        """x [B, N, C] -> [B, N - r, C]: each merged A token is reduced into its B token (``mode`` is
        ``scatter_reduce``'s: "mean", "sum", "amax", ...). Order: the prefix tokens (original order), the other
        unmerged A tokens (original order), the other B tokens (original order)."""
        a, b = x[..., ::2, :], x[..., 1::2, :]
        batch, _, channels = a.shape
        kept = a.gather(dim=-2, index=self.unmerged.expand(batch, self.unmerged.shape[1], channels))
        moved = a.gather(dim=-2, index=self.merged.expand(batch, self.r, channels))
        b = b.scatter_reduce(-2, self.destination.expand(batch, self.r, channels), moved, reduce=mode)
        pa, pb = self.protected_a, self.protected_b
        if pb == 0:  # [CLS] alone (or no prefix): ToMe's own order, unmerged A then B
            return torch.cat([kept, b], dim=1)
        # Prefix tokens alternate A, B, A, B, ... from token 0: interleave them back into their original order.
        prefix = [(kept if i % 2 == 0 else b)[:, i // 2 : i // 2 + 1] for i in range(pa + pb)]
        return torch.cat([*prefix, kept[:, pa:], b[:, pb:]], dim=1)


def bipartite_soft_matching(metric: torch.Tensor, r: int, protected: int = 1) -> Matching | None:
    """ToMe's matching for one layer: metric [B, N, D] (the keys averaged over heads) -> a :class:`Matching` that
    removes ``min(r, (N - protected) // 2)`` tokens, or None when that is 0.

    Every A token's edge goes to its most cosine-similar B token; the r A tokens with the most similar edges are
    merged into their B tokens. The first ``protected`` tokens (prefix tokens) are never merged, nor merged into.
    The matching is a discrete choice, taken without gradient.
    """
    tokens = metric.shape[1]
    r = min(r, (tokens - protected) // 2)
    if r <= 0:
        return None
    protected_a, protected_b = (protected + 1) // 2, protected // 2  # prefix tokens 0, 2, 4, … are in A
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[..., ::2, :], metric[..., 1::2, :]
        scores = a @ b.transpose(-1, -2)  # [B, N_A, N_B] cosine similarities
        scores[..., :protected_a, :] = -math.inf  # a protected A token has no edge: it is never merged
        scores[..., :, :protected_b] = -math.inf  # nothing merges into a protected B token
        node_max, node_idx = scores.max(dim=-1)  # each A token's best B token
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unmerged = edge_idx[..., r:, :].sort(dim=1).values
        merged = edge_idx[..., :r, :]
        destination = node_idx[..., None].gather(dim=-2, index=merged)
    return Matching(unmerged, merged, destination, protected_a, protected_b)


def merge_wavg(merge: Merge, x: torch.Tensor, size: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge x [B, N, C] by size-weighted averages: a merged token is the mean of the patches it stands for.
    ``size`` [B, N, 1] counts the patches behind each token (None: all 1). Returns (x [B, N', C], size [B, N', 1])."""
    if size is None:
        size = torch.ones_like(x[..., 0, None])
    x = merge(x * size, mode="sum")
    size = merge(size, mode="sum")
    return x / size, size


def merge_source(merge: Merge, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
    """Which original tokens each token stands for, merged like the tokens: source [B, N, N₀] of 0/1 (None: the
    identity over x [B, N₀, C]'s tokens) -> [B, N', N₀]. Row i marks the original tokens merged into token i."""
    if source is None:
        batch, tokens, _ = x.shape
        source = torch.eye(tokens, device=x.device)[None].expand(batch, tokens, tokens)
    return merge(source, mode="amax")


def merge_groups(source: torch.Tensor, num_prefix_tokens: int = 1) -> list[list[list[int]]]:
    """For each image and each token after the prefix tokens, the patch indices merged into it, ascending
    (0 = the first patch after the prefix tokens). source: [B, N, N₀] from :func:`merge_source`; the groups of
    one image partition its patches."""
    P = num_prefix_tokens
    patches = source[:, P:, P:] > 0
    return [[row.nonzero().flatten().tolist() for row in image] for image in patches.cpu()]


Schedule = int | tuple[int, float] | Sequence[int]


def parse_r(num_layers: int, r: Schedule) -> list[int]:
    """Tokens to remove in each of ``num_layers`` blocks (ToMe's ``parse_r``, tome/utils.py):

    - an int: the same r in every block;
    - a tuple ``(r, inflection)``, inflection in [-1, 1]: r per block trends up (+1), stays (0) or goes down (-1,
      the paper's "decreasing schedule") around an average of r;
    - a list: r of each block, missing trailing blocks 0.
    """
    if isinstance(r, list):
        _check_counts(r, num_layers)
        return [*r, *([0] * (num_layers - len(r)))]
    inflection = 0.0
    if isinstance(r, tuple):
        if len(r) != 2 or not isinstance(r[1], (int, float)) or isinstance(r[1], bool) or not -1 <= r[1] <= 1:
            raise ValueError(f"r={r!r} is not allowed: a tuple is (r, inflection) with inflection in [-1, 1]")
        r, inflection = r
    if not _is_count(r):
        raise ValueError(
            f"r={r!r} is not allowed: expected an integer >= 0, a tuple (r, inflection in [-1, 1]) or a list of "
            "integers >= 0, one per block"
        )
    low = int(r * (1.0 - inflection))
    high = 2 * r - low
    step = (high - low) / (num_layers - 1) if num_layers > 1 else 0.0
    return [int(low + step * i) for i in range(num_layers)]


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_counts(schedule: list, num_layers: int) -> None:
    if not all(_is_count(v) for v in schedule):
        raise ValueError(f"r={schedule!r} is not allowed: a list gives each block's r, integers >= 0")
    if len(schedule) > num_layers:
        raise ValueError(
            f"r={schedule!r} has {len(schedule)} entries but the model has {num_layers} blocks: expected at most "
            f"{num_layers}"
        )


def removed_per_layer(tokens: int, schedule: Sequence[int], protected: int = 1) -> list[int]:
    """The tokens each block actually removes: r capped at half of the mergeable tokens, as the matching caps it."""
    removed = []
    for r in schedule:
        r = max(min(r, (tokens - protected) // 2), 0)
        removed.append(r)
        tokens -= r
    return removed


def token_counts(tokens: int, schedule: Sequence[int], protected: int = 1) -> list[int]:
    """Tokens entering each block, then leaving the last: ``len(schedule) + 1`` counts from ``tokens`` (N₀)."""
    counts = [tokens]
    for r in removed_per_layer(tokens, schedule, protected):
        counts.append(counts[-1] - r)
    return counts
