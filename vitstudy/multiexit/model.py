"""``MultiExitViT``: an intermediate block feeds a classifier and confident images return early.

A thin wrapper around any timm ``VisionTransformer``: it calls timm's own pieces (``models.forward_start``,
``blocks[i]``, ``norm``, ``forward_head``) and copies none of their code, so timm's fused attention stays in use.
Exits sit "after block k" (1-indexed, as in the report); each exit is the model's final norm plus a classifier.
The class holds the knobs and the forward only; recording features and fitting heads are functions in
``heads`` that take the model.

Classifier variants (the report's three, plus one):

- ``same``: the trained final head, untouched, on every exit.
- ``finetune``: one head shared by the exits and the final output, fine-tuned on exit and final features
  (backbone frozen). The final output uses it too, which is why the report's "original model" accuracy moves.
- ``scratch``: the same shared head, trained from a fresh init.
- ``separate``: one head per exit (each starts as a copy of the final head); the final head is left intact.
- ``joint``: the same layout, with the backbone and every head trained together (``multiexit.joint``).

On a SkipViT-patched backbone (``skipvit.apply_skipvit``) with dropping on, the blocks run as SkipViT's own forward
runs them (``skipvit.run_skipvit_blocks`` on a ``skipvit.TokenState``): an exit sees the sequence its block outputs
(fewer tokens inside the drop region, all of them again from the skip layer on), and an image that leaves takes its
held tokens with it. With no image leaving, the logits are the patched model's own.

Exit policies: ``batch`` (the report's rule: the whole batch leaves when the least confident image reaches the
threshold) and ``sample`` (each image leaves on its own; the rest go on as a smaller batch).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

import torch
from timm.models import VisionTransformer
from torch import nn

from ..config import check, check_choice
from ..models import check_is_vit, forward_start
from ..skipvit.patch import SkipViTMixin, TokenState, checkpointing, run_piece, run_skipvit_blocks
from ..skipvit.settings import SkipViTSettings
from .exits import (
    CONFIDENCES,
    POLICIES,
    ExitRule,
    check_exits,
    check_threshold,
    compact,
    confidence,
)

FROZEN_VARIANTS = ("same", "finetune", "scratch", "separate")  # heads fitted on a frozen backbone's features
VARIANTS = (*FROZEN_VARIANTS, "joint")
SCRATCH_HEAD_SEED = 0  # the `scratch` variant's head starts from these random weights
DEFAULT_EXITS = (3, 6, 9)  # the report's "residual path" positions in a depth-12 ViT


@dataclass
class ExitOutput:
    """What a multi-exit forward returns, rows in input order.

    ``exit_block`` and ``confidence`` are tensors made when first read: the forward keeps its bookkeeping on the
    host and decides in log space (``exits.ExitRule``), so a caller that reads only the logits pays for neither.
    """

    logits: torch.Tensor  # [B, classes]
    exit_blocks: list[int]  # per image, the block it left after; depth = it ran the whole model
    exits: tuple[int, ...]
    depth: int
    # Per exit reached: (its column, the input position of each of its rows, its logits [b, classes])
    seen: list[tuple[int, list[int], torch.Tensor]] = field(repr=False)
    confidence_kind: str = "softmax"

    @cached_property
    def exit_block(self) -> torch.Tensor:
        """``[B]`` long: :attr:`exit_blocks` on the logits' device."""
        blocks, device = self.exit_blocks, self.logits.device
        if len(set(blocks)) == 1:  # one value: filled on the device, nothing copied from the host
            return torch.full((len(blocks),), blocks[0], dtype=torch.long, device=device)
        return torch.tensor(blocks, dtype=torch.long, device=device)

    @property
    def exited_share(self) -> float:
        """Fraction of images that left before the last block."""
        return (self.exit_block < self.depth).float().mean().item()

    @cached_property
    def confidence(self) -> torch.Tensor:
        """``[B, exits]`` confidence seen at each exit (``confidence_kind``); nan where the image never got there."""
        table = torch.full((len(self.logits), len(self.exits)), math.nan, device=self.logits.device)
        for column, rows, logits in self.seen:
            values = confidence(logits, self.confidence_kind)
            if len(rows) == len(table):  # every row, in input order (nobody had left yet)
                table[:, column] = values
            else:
                table[torch.tensor(rows, device=table.device), column] = values
        return table


Tokens = torch.Tensor | TokenState  # what runs between exits: the sequence, or SkipViT's state of it


def _sequence(x: Tokens) -> torch.Tensor:
    return x.x if isinstance(x, TokenState) else x


def _compact(x: Tokens, rows: torch.Tensor) -> Tokens:
    """The batch rows that continue; a SkipViT state keeps its held tokens' rows with them."""
    return x.select(rows) if isinstance(x, TokenState) else compact(x, rows)


def _rows(positions: list[int], device: torch.device) -> torch.Tensor:
    """Row positions as an index tensor (as_tensor: one operator, where torch.tensor dispatches two)."""
    return torch.as_tensor(positions, device=device)


def _linear_head(vit: VisionTransformer) -> nn.Linear:
    if not isinstance(vit.head, nn.Linear):
        raise ValueError(
            f"the model's head is {type(vit.head).__name__}, not a classifier: create it with num_classes >= 1"
        )
    return vit.head


class MultiExitViT(nn.Module):
    """A timm ViT with early exits after ``exits`` (1-indexed blocks); knobs are plain attributes.

    ``threshold``, ``policy``, ``confidence`` and ``forced_exit`` are checked when set. ``forced_exit=k``
    sends every image out after block k and computes only k blocks (the report's Table 5.1).
    ``keep_every_row=True`` is a timing control: every exit still decides and compacts the batch, but no image
    leaves, so the per-sample path's bookkeeping is paid without its savings (the output is the plain model's). It
    compacts at batch 1 too, where the per-sample path itself never does (one image leaves whole or goes on).

    The exit decision is read to the host once per exit (twice when a row's confidence sits within float32 rounding
    of the threshold, ``exits.ExitRule``): a few logits (a small batch) are read themselves and decided in Python,
    more are reduced on the device first. The input positions of the rows still running are kept on the host, so
    an exit that nobody leaves runs no operator beyond its head and that read.
    """

    def __init__(
        self,
        vit: nn.Module,
        exits: Iterable[int] = DEFAULT_EXITS,
        variant: str = "same",
        threshold: float = 1.0,
        policy: str = "sample",
        confidence: str = "softmax",
        forced_exit: int | None = None,
        keep_every_row: bool = False,
    ) -> None:
        super().__init__()
        self.vit = check_is_vit(vit)
        self.depth = len(vit.blocks)
        self.exits = check_exits(exits, self.depth)
        self.variant = check_choice("variant", variant, VARIANTS)
        head = _linear_head(vit)
        if variant == "same":
            exit_heads, final_head = [head] * len(self.exits), head
        elif variant in ("finetune", "scratch"):
            shared = copy.deepcopy(head)
            if variant == "scratch":
                # Its own seed, not the global generator: the head (and every number of the `scratch` rows) must
                # not depend on what the process drew before (a baseline trained in this kernel, or loaded).
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(SCRATCH_HEAD_SEED)
                    shared.reset_parameters()
            exit_heads, final_head = [shared] * len(self.exits), shared
        else:  # separate, joint: each exit starts from the final head, which stays as trained
            exit_heads, final_head = [copy.deepcopy(head) for _ in self.exits], head
        self.exit_heads = nn.ModuleList(exit_heads)
        self.final_head = final_head
        # Exits only need the [CLS] token when the model pools it: the norm then runs on 1 token, not all.
        self._token_pool = vit.global_pool == "token" and getattr(vit, "attn_pool", None) is None
        # ... and with nothing between timm's token pooling and the classifier but an fc_norm that is Identity and a
        # Dropout, the features are the normalised [CLS] row itself (what forward_head returns, in two operators
        # fewer per exit: the slice kept for the norm and the dropout call).
        self._cls_row = (
            self._token_pool and isinstance(vit.fc_norm, nn.Identity) and isinstance(vit.head_drop, nn.Dropout)
        )
        self.threshold = threshold
        self.policy = policy
        self.confidence = confidence
        self.forced_exit = forced_exit
        self.keep_every_row = keep_every_row

    # Knobs, validated at the boundary --------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = check_threshold(value)
        self._rule = None

    @property
    def policy(self) -> str:
        return self._policy

    @policy.setter
    def policy(self, value: str) -> None:
        self._policy = check_choice("policy", value, POLICIES)
        self._rule = None

    @property
    def confidence(self) -> str:
        return self._confidence

    @confidence.setter
    def confidence(self, value: str) -> None:
        self._confidence = check_choice("confidence", value, CONFIDENCES)
        self._rule = None

    @property
    def forced_exit(self) -> int | None:
        return self._forced_exit

    @forced_exit.setter
    def forced_exit(self, value: int | None) -> None:
        check(value is None or value in self.exits, "forced_exit", value, f"None or one of the exits {self.exits}")
        self._forced_exit = value

    def exit_rule(self, classes: int) -> ExitRule:
        """The exit decision at the current knobs for logits of ``classes``, worked out once per setting (a knob's
        setter drops it), so a forward spends nothing on the threshold's constants."""
        rule = self._rule
        if rule is None or rule.classes != classes:
            rule = self._rule = ExitRule.of(self.threshold, self.policy, self.confidence, classes)
        return rule

    # Pieces (timm's own modules) ---------------------------------------------------------------------------

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch, on the backbone: in training each block's forward is recomputed in backward."""
        self.vit.set_grad_checkpointing(enable)

    def dropping(self) -> SkipViTSettings | None:
        """The backbone's SkipViT settings when it is patched and dropping is on, else None (plain blocks)."""
        if isinstance(self.vit, SkipViTMixin) and self.vit.skipvit.active:
            return self.vit.skipvit
        return None

    def start(self, images: torch.Tensor) -> Tokens:
        """The first block's input for images ``[B, C, H, W]``: tokens ``[B, N, D]``, or their ``TokenState``
        when the backbone drops tokens (what :meth:`run_blocks` carries from exit to exit)."""
        return self._start(images, self.dropping())

    def _start(self, images: torch.Tensor, settings: SkipViTSettings | None) -> Tokens:
        tokens = forward_start(self.vit, images)
        return tokens if settings is None else TokenState.start(tokens)

    def run_blocks(self, x: Tokens, start: int, stop: int) -> Tokens:
        """Blocks ``start+1 ... stop`` (1-indexed; i.e. ``blocks[start:stop]``) on tokens ``[B, N, D]``.

        With SkipViT dropping on they run as the patched backbone's forward runs them and return a ``TokenState``
        (the dropped tokens travel with it); a plain tensor is accepted only before the first drop layer, where
        nothing is held yet.
        """
        return self._run_blocks(x, start, stop, self.dropping(), checkpointing(self.vit))

    def _run_blocks(
        self, x: Tokens, start: int, stop: int, settings: SkipViTSettings | None, checkpointed: bool
    ) -> Tokens:
        # The forward looks up the settings and the checkpointing switch once for all its block runs.
        if settings is None:
            x = x.x if isinstance(x, TokenState) else x
            blocks = itertools.islice(self.vit.blocks, start, stop)  # slicing would build a new Sequential
            if not checkpointed:  # timm's own loop: nothing but the blocks' calls
                for block in blocks:
                    x = block(x)
                return x
            for block in blocks:
                x = run_piece(block, x, checkpointed=True)
            return x
        if not isinstance(x, TokenState):
            ok = start < settings.drop_layers[0]
            check(
                ok,
                "tokens",
                type(x).__name__,
                f"the TokenState run_blocks returned (after block {start} of {settings.label}, tokens are held aside)",
            )
            x = TokenState.start(x)
        return run_skipvit_blocks(
            self.vit.blocks, x, start, stop, settings, self.vit.num_prefix_tokens, checkpointed=checkpointed
        )

    def exit_features(self, x: Tokens) -> torch.Tensor:
        """Pre-logits features at an exit: final norm + timm's pooling, ``[B, N, D] -> [B, D]``."""
        x = _sequence(x)
        if self._cls_row and not (self.training and self.vit.head_drop.p > 0):  # the dropout is the identity
            return self.vit.norm(x[:, 0])
        if self._token_pool:
            x = x[:, :1]  # LayerNorm is per token: normalising only [CLS] gives the same pooled vector
        return self.vit.forward_head(self.vit.norm(x), pre_logits=True)

    def final_features(self, x: Tokens) -> torch.Tensor:
        """Pre-logits features after the last block, exactly as timm computes them, ``[B, N, D] -> [B, D]``."""
        x = _sequence(x)
        return self.vit.forward_head(self.vit.norm(x), pre_logits=True)

    def final_logits(self, x: Tokens) -> torch.Tensor:
        """Logits after the last block ``[B, N, D] -> [B, classes]``: the final head on :meth:`exit_features`, which
        are timm's pre-logits (on a [CLS]-pooled model the norm runs on that row alone: the same numbers as timm's
        norm over every token, for less work)."""
        return self.final_head(self.exit_features(x))

    # Forward ------------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, forced_exit: int | None = None) -> ExitOutput:
        forced = forced_exit if forced_exit is not None else self.forced_exit
        if forced_exit is not None:
            check(forced_exit in self.exits, "forced_exit", forced_exit, f"one of the exits {self.exits}")
        batch = x.shape[0]
        settings, checkpointed = self.dropping(), checkpointing(self.vit)
        tokens = self._start(x, settings)
        if forced is not None:
            index = self.exits.index(forced)
            tokens = self._run_blocks(tokens, 0, forced, settings, checkpointed)
            logits = self.exit_heads[index](self.exit_features(tokens))
            everyone = list(range(batch))
            return ExitOutput(
                logits, [forced] * batch, self.exits, self.depth, [(index, everyone, logits)], self.confidence
            )

        # The bookkeeping lives on the host: the decision is read there anyway (the one sync per exit), and a
        # position list costs no operator, so a batch of one (which leaves whole or not at all) runs none beyond the
        # exit head and the read, and a larger batch only the gathers of the rows that stay and those that leave.
        origin = list(range(batch))  # input position of each row still running
        exit_block = [self.depth] * batch
        seen: list[tuple[int, list[int], torch.Tensor]] = []
        finished: list[tuple[torch.Tensor, list[int]]] = []  # logits of the rows that left, with their positions
        done, rule = 0, None
        for index, (block, head) in enumerate(zip(self.exits, self.exit_heads)):
            tokens = self._run_blocks(tokens, done, block, settings, checkpointed)
            done = block
            logits = head(self.exit_features(tokens))
            seen.append((index, origin, logits))
            decided = logits.detach() if logits.requires_grad else logits  # the decision builds no graph
            if rule is None:
                rule = self.exit_rule(logits.shape[-1])
            leaving = rule.leaving_rows(decided)
            if self.keep_every_row:
                leaving = []  # decided, then overruled: the compaction below keeps every row
            elif not leaving:
                continue
            for row in leaving:
                exit_block[origin[row]] = block
            if len(leaving) == len(origin):
                finished.append((logits, origin))
                return self._output(finished, exit_block, seen, x.device)
            if leaving:
                gone = _rows(leaving, x.device)
                finished.append((logits.index_select(0, gone), [origin[row] for row in leaving]))
            staying = sorted(set(range(len(origin))) - set(leaving))
            tokens = _compact(tokens, _rows(staying, x.device))
            origin = [origin[row] for row in staying]
        tokens = self._run_blocks(tokens, done, self.depth, settings, checkpointed)
        finished.append((self.final_logits(tokens), origin))
        return self._output(finished, exit_block, seen, x.device)

    def _output(
        self,
        finished: list[tuple[torch.Tensor, list[int]]],
        exit_block: list[int],
        seen: list[tuple[int, list[int], torch.Tensor]],
        device: torch.device,
    ) -> ExitOutput:
        """Every row's logits in input order from the groups that left together (each with its input positions)."""
        if len(finished) == 1:  # one group: every row, in input order
            logits = finished[0][0]
        else:
            # One concatenation and one gather, however many exits fired (the first group's dtype, as under autocast
            # the exits' and the final head's may differ).
            dtype = finished[0][0].dtype
            stacked = torch.cat([rows if rows.dtype == dtype else rows.to(dtype) for rows, _ in finished])
            where = [0] * len(exit_block)  # where = the row of `stacked` holding each input position
            for row, position in enumerate(p for _, positions in finished for p in positions):
                where[position] = row
            logits = stacked.index_select(0, _rows(where, device))
        return ExitOutput(logits, exit_block, self.exits, self.depth, seen, self.confidence)


class SkipExitViT(MultiExitViT):
    """Both methods at once: a ``MultiExitViT`` over a SkipViT-patched backbone (``skipvit.apply_skipvit``).

    ``MultiExitViT`` itself composes with any patched backbone; this class adds only the check that the backbone
    is patched, so a model built to drop tokens cannot silently run without. Exits may sit anywhere, inside the
    drop region too (an exit there sees the kept tokens only).
    """

    def __init__(self, vit: nn.Module, *args, **kwargs) -> None:
        if not isinstance(vit, SkipViTMixin):
            raise TypeError(
                f"SkipExitViT needs a SkipViT-patched backbone, got {type(vit).__name__}: call "
                "skipvit.apply_skipvit(vit, settings) first, or use MultiExitViT"
            )
        super().__init__(vit, *args, **kwargs)
