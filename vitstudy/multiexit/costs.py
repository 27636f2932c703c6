"""FLOP accounting of exiting: what each piece of a multi-exit ViT costs, and the FLOP-ideal speed-up of an
exit histogram (the yardstick every measured speed-up is set beside)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..bench import count_flops
from ..models import forward_start
from .model import MultiExitViT


@dataclass(frozen=True)
class ExitCosts:
    """Forward FLOPs per image of each piece of a multi-exit ViT (multiply-add = 2 FLOPs)."""

    embed: float
    blocks: tuple[float, ...]
    exit_head: float  # final norm on the pooled token(s) + one exit classifier
    final_head: float  # final norm + timm's pooling + the final classifier

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def plain(self) -> float:
        """The unmodified model: every block, the final head."""
        return self.embed + sum(self.blocks) + self.final_head

    def forced(self, block: int) -> float:
        """Every image forced out after ``block``: only those blocks and one exit head."""
        return self.embed + sum(self.blocks[:block]) + self.exit_head

    def per_exit(self, exits: Sequence[int]) -> torch.Tensor:
        """Cost of an image leaving at each of ``exits`` or at the end, ``[len(exits) + 1]``.

        An image pays for every exit head it passed, so the last entry (ran everything) exceeds ``plain()``.
        """
        costs = [self.embed + sum(self.blocks[:b]) + (i + 1) * self.exit_head for i, b in enumerate(exits)]
        costs.append(self.plain() + len(exits) * self.exit_head)
        return torch.tensor(costs, dtype=torch.float64)

    def ideal_speedup(self, exits: Sequence[int], exit_block: torch.Tensor) -> float:
        """FLOP-ideal speed-up over the plain model of images that left at ``exit_block`` ``[N]`` (depth = end)."""
        blocks = torch.tensor([*exits, self.depth])
        index = (exit_block.reshape(-1, 1) == blocks).long().argmax(1)  # [N] column of each image's exit
        return self.plain() / self.per_exit(exits)[index].mean().item()


def exit_costs(model: MultiExitViT, input_size: tuple[int, int, int]) -> ExitCosts:
    """Count each piece once on one image with ``bench.count_flops`` (on the model's device).

    On a backbone with SkipViT dropping on, ``plain()`` is the patched model's cost (the FLOP product of the two
    methods: each block costs what it costs on the tokens SkipViT leaves it) and ``forced(k)`` what an exit after
    block k costs there."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            x = torch.randn(1, *input_size, device=device)
            embed = count_flops(forward_start, model.vit, x)
            # Block by block through the model's own run_blocks, so a SkipViT backbone's blocks are counted on the
            # tokens they see while dropping (the drop scores included) and forced(k) is what forcing k costs.
            tokens = model.start(x)
            blocks = []
            for done in range(model.depth):
                blocks.append(count_flops(model.run_blocks, tokens, done, done + 1))
                tokens = model.run_blocks(tokens, done, done + 1)
            exit_head = count_flops(lambda t: model.exit_heads[0](model.exit_features(t)), tokens)
            final_head = count_flops(model.final_logits, tokens)
    finally:
        model.train(was_training)
    return ExitCosts(embed, tuple(blocks), exit_head, final_head)
