"""ToMe's token maths (vitstudy.tome.merge): matching order and protection, size-weighted merging, sources and
merge groups, the r schedule and the token counts it gives."""

from __future__ import annotations

import pytest
import torch

from vitstudy import tome


def _metric(tokens: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, tokens, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("protected", [0, 1, 2, 3])
def test_prefix_tokens_come_first_and_unmerged(protected):
    """Merging token indices: the prefix tokens lead in their original order, untouched, and each other token keeps
    a single index or a merged mean; r tokens go."""
    metric = _metric(21)
    matching = tome.bipartite_soft_matching(metric, 6, protected)
    index = torch.arange(21.0)[None, :, None].expand(2, 21, 1)
    merged = matching.merge(index, mode="amax")
    assert merged.shape == (2, 15, 1)
    assert torch.equal(merged[:, :protected, 0], torch.arange(float(protected)).expand(2, protected))
    assert matching.r == 6


def test_weighted_average_keeps_constants_and_sizes():
    """Merging equal tokens gives them back; sizes sum to the tokens merged; weights are the sizes."""
    metric = _metric(11)
    matching = tome.bipartite_soft_matching(metric, 4)
    x, size = tome.merge_wavg(matching.merge, torch.full((2, 11, 3), 2.5))
    assert torch.equal(x, torch.full((2, 7, 3), 2.5)) and torch.equal(size.sum(dim=1), torch.full((2, 1), 11.0))
    # Two tokens of size 3 and 1 with values 0 and 4 average to 1, not 2.
    pair = tome.bipartite_soft_matching(torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]), 1, protected=0)
    y, s = tome.merge_wavg(pair.merge, torch.tensor([[[0.0], [4.0]]]), torch.tensor([[[3.0], [1.0]]]))
    assert torch.equal(y, torch.tensor([[[1.0]]])) and torch.equal(s, torch.tensor([[[4.0]]]))


def test_sources_compose_over_layers_and_give_merge_groups():
    """Two rounds of merging: every original token is in exactly one final token; merge_groups lists the patches
    (after the [CLS]) of each final patch token, ascending, partitioning the patches."""
    x = torch.randn(2, 17, 4, generator=torch.Generator().manual_seed(3))
    first = tome.bipartite_soft_matching(_metric(17), 5)
    source = tome.merge_source(first.merge, x)
    x = first.merge(x)
    second = tome.bipartite_soft_matching(_metric(12, seed=1), 3)
    source = tome.merge_source(second.merge, x, source)
    assert source.shape == (2, 9, 17) and torch.equal(source.sum(dim=1), torch.ones(2, 17))
    groups = tome.merge_groups(source)
    assert len(groups) == 2 and all(len(image) == 8 for image in groups)
    for image in groups:
        assert all(group == sorted(group) and group for group in image)
        assert sorted(p for group in image for p in group) == list(range(16))


def test_merge_groups_of_no_merge_are_single_patches():
    """The identity source: each patch token stands for itself."""
    assert tome.merge_groups(torch.eye(4)[None]) == [[[0], [1], [2]]]


def test_schedule_forms():
    """An int is constant, a list is padded with zeros, inflection -1 decreases from 2r to 0, one block is r."""
    assert tome.parse_r(4, 3) == [3, 3, 3, 3]
    assert tome.parse_r(4, [5, 1]) == [5, 1, 0, 0]
    assert tome.parse_r(3, (4, -1)) == [8, 4, 0]
    assert tome.parse_r(1, (4, -1)) == [8]


def test_token_counts_cap_at_half_the_mergeable_tokens():
    """Each block removes at most half of its non-prefix tokens, as the matching does."""
    assert tome.removed_per_layer(11, [100, 100, 100]) == [5, 2, 1]
    assert tome.token_counts(11, [100, 100, 100]) == [11, 6, 4, 3]
    assert tome.token_counts(10, [2, 0, 3], protected=0) == [10, 8, 8, 5]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8", (2, 3), (1, 0.5, 0), [1, None]])
def test_bad_schedule_is_one_line(bad):
    """Anything but ToMe's three forms is refused in one line that names the value."""
    with pytest.raises(ValueError, match="^r=.*not allowed[^\n]*$"):
        tome.parse_r(12, bad)
