"""Multi-exit ViT: an intermediate block feeds a classifier and confident images return early.

A thin wrapper around any timm ``VisionTransformer``: it calls timm's own pieces (``patch_embed``, ``_pos_embed``,
``patch_drop``, ``norm_pre``, ``blocks[i]``, ``norm``, ``forward_head``) and copies none of their code, so timm's
fused attention stays in use. Exits sit "after block k" (1-indexed, as in the report); each exit is the model's
final norm plus a classifier. The exit maths lives in pure tensor functions below (confidence, exit decision,
batch compaction, scatter-back); ``MultiExitViT`` strings them together.

Classifier variants (the report's three, plus one):

- ``same``: the trained final head, untouched, on every exit.
- ``finetune``: one head shared by the exits and the final output, fine-tuned on exit and final features
  (backbone frozen). The final output uses it too, which is why the report's "original model" accuracy moves.
- ``scratch``: the same shared head, trained from a fresh init.
- ``separate``: one head per exit (each starts as a copy of the final head); the final head is left intact.

Exit policies: ``batch`` (the report's rule: the whole batch leaves when the least confident image reaches the
threshold) and ``sample`` (each image leaves on its own; the rest go on as a smaller batch).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from timm.models import VisionTransformer
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models import check_is_vit

VARIANTS = ("same", "finetune", "scratch", "separate")
POLICIES = ("batch", "sample")
CONFIDENCES = ("softmax", "entropy", "margin")
DEFAULT_EXITS = (3, 6, 9)  # the report's "residual path" positions in a depth-12 ViT


# ----------------------------------------------------------------------------------------------------------
# Pure tensor helpers


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


def split_exiting(leave: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices ``(stay, leave)`` of a ``[B]`` mask with ``count`` True entries, each in input order.

    One stable sort instead of two ``nonzero`` calls: the only host sync is the caller's ``count``.
    """
    order = torch.argsort(leave.to(torch.uint8), stable=True)  # staying rows first, both groups in order
    stay_count = leave.shape[0] - count
    return order[:stay_count], order[stay_count:]


def compact(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The batch rows that continue, ``[B, N, C] -> [b, N, C]`` (one ``index_select``)."""
    return x.index_select(0, rows)


def scatter_rows(out: torch.Tensor, origin: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Write ``rows`` ``[b, ...]`` into ``out`` ``[B, ...]`` at input positions ``origin`` ``[b]``; returns ``out``."""
    return out.index_copy_(0, origin, rows.to(out.dtype))


# ----------------------------------------------------------------------------------------------------------
# Boundary checks


def check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed: expected one of {tuple(allowed)}")
    return value


def check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, int | float) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold={threshold!r} is not allowed: expected a number in [0, 1]")
    return float(threshold)


def check_exits(exits: Iterable[int], depth: int) -> tuple[int, ...]:
    exits = tuple(exits)
    if not exits:
        raise ValueError(f"exits={exits!r} is not allowed: expected at least one block in 1...{depth - 1}")
    for block in exits:
        if not isinstance(block, int) or not 1 <= block <= depth - 1:
            raise ValueError(
                f"exit after block {block!r} is not allowed: expected an integer in 1...{depth - 1} "
                f"(the model has {depth} blocks; exiting after the last one is the plain model)"
            )
    if len(set(exits)) != len(exits):
        raise ValueError(f"exits={exits!r} is not allowed: each block may appear once")
    return tuple(sorted(exits))


# ----------------------------------------------------------------------------------------------------------
# The wrapper


@dataclass
class ExitOutput:
    """What a multi-exit forward returns, rows in input order."""

    logits: torch.Tensor  # [B, classes]
    exit_block: torch.Tensor  # [B] long: the block each image left after; depth = it ran the whole model
    confidence: torch.Tensor  # [B, exits] confidence seen at each exit; nan where the image never got there
    exits: tuple[int, ...]
    depth: int

    @property
    def exited_share(self) -> float:
        """Fraction of images that left before the last block."""
        return (self.exit_block < self.depth).float().mean().item()


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
                shared.reset_parameters()
            exit_heads, final_head = [shared] * len(self.exits), shared
        else:  # separate: each exit starts from the final head, which stays as trained
            exit_heads, final_head = [copy.deepcopy(head) for _ in self.exits], head
        self.exit_heads = nn.ModuleList(exit_heads)
        self.final_head = final_head
        # Exits only need the [CLS] token when the model pools it: the norm then runs on 1 token, not all.
        self._token_pool = vit.global_pool == "token" and getattr(vit, "attn_pool", None) is None
        self.threshold = threshold
        self.policy = policy
        self.confidence = confidence
        self.forced_exit = forced_exit

    # Knobs, validated at the boundary --------------------------------------------------------------------

    @property
    def threshold(self) -> float:
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = check_threshold(value)

    @property
    def policy(self) -> str:
        return self._policy

    @policy.setter
    def policy(self, value: str) -> None:
        self._policy = check_choice("policy", value, POLICIES)

    @property
    def confidence(self) -> str:
        return self._confidence

    @confidence.setter
    def confidence(self, value: str) -> None:
        self._confidence = check_choice("confidence", value, CONFIDENCES)

    @property
    def forced_exit(self) -> int | None:
        return self._forced_exit

    @forced_exit.setter
    def forced_exit(self, value: int | None) -> None:
        if value is not None and value not in self.exits:
            raise ValueError(f"forced_exit={value!r} is not allowed: expected None or one of the exits {self.exits}")
        self._forced_exit = value

    # Pieces (timm's own modules) ---------------------------------------------------------------------------

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` to tokens ``[B, N, D]``, as timm's ``forward_features`` starts."""
        vit = self.vit
        return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))

    def run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Blocks ``start+1 ... stop`` (1-indexed; i.e. ``blocks[start:stop]``) on tokens ``[B, N, D]``."""
        for block in self.vit.blocks[start:stop]:
            x = block(x)
        return x

    def exit_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-logits features at an exit: final norm + timm's pooling, ``[B, N, D] -> [B, D]``."""
        if self._token_pool:
            x = x[:, :1]  # LayerNorm is per token: normalising only [CLS] gives the same pooled vector
        return self.vit.forward_head(self.vit.norm(x), pre_logits=True)

    def final_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-logits features after the last block, exactly as timm computes them, ``[B, N, D] -> [B, D]``."""
        return self.vit.forward_head(self.vit.norm(x), pre_logits=True)

    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits after the last block ``[B, N, D] -> [B, classes]``: timm's own head path when it is kept."""
        if self.final_head is self.vit.head:
            return self.vit.forward_head(self.vit.norm(x))
        return self.final_head(self.final_features(x))

    # Forward ------------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, forced_exit: int | None = None) -> ExitOutput:
        forced = forced_exit if forced_exit is not None else self.forced_exit
        if forced_exit is not None and forced_exit not in self.exits:
            raise ValueError(f"forced_exit={forced_exit!r} is not allowed: expected one of the exits {self.exits}")
        batch = x.shape[0]
        tokens = self.embed(x)
        conf_seen = torch.full((len(self.exits), batch), math.nan, device=x.device)  # [exits, B]
        if forced is not None:
            index = self.exits.index(forced)
            tokens = self.run_blocks(tokens, 0, forced)
            logits = self.exit_heads[index](self.exit_features(tokens))
            conf_seen[index] = confidence(logits, self.confidence)
            exit_block = torch.full((batch,), forced, dtype=torch.long, device=x.device)
            return ExitOutput(logits, exit_block, conf_seen.t(), self.exits, self.depth)

        exit_block = torch.full((batch,), self.depth, dtype=torch.long, device=x.device)
        origin = torch.arange(batch, device=x.device)  # input position of each row still running
        out: torch.Tensor | None = None
        done = 0
        for index, block in enumerate(self.exits):
            tokens = self.run_blocks(tokens, done, block)
            done = block
            logits = self.exit_heads[index](self.exit_features(tokens))
            conf = confidence(logits, self.confidence)
            conf_seen[index].index_copy_(0, origin, conf)
            leave = exit_decision(conf, self.threshold, self.policy)
            count = int(leave.sum())  # the one host sync per exit: the next batch's size depends on it
            if count == 0:
                continue
            if out is None:
                out = logits.new_empty(batch, logits.shape[-1])
            if count == len(origin):
                scatter_rows(out, origin, logits)
                exit_block.index_fill_(0, origin, block)
                return ExitOutput(out, exit_block, conf_seen.t(), self.exits, self.depth)
            stay, gone = split_exiting(leave, count)
            gone_origin = origin.index_select(0, gone)
            scatter_rows(out, gone_origin, logits.index_select(0, gone))
            exit_block.index_fill_(0, gone_origin, block)
            tokens, origin = compact(tokens, stay), origin.index_select(0, stay)
        logits = self.final_logits(self.run_blocks(tokens, done, self.depth))
        if out is not None:
            logits = scatter_rows(out, origin, logits)
        return ExitOutput(logits, exit_block, conf_seen.t(), self.exits, self.depth)

    # Recorded features and head training --------------------------------------------------------------------

    @torch.inference_mode()
    def record_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-logits features at every exit and after the last block, ``[B, C, H, W] -> [B, exits + 1, D]``."""
        tokens, done, features = self.embed(x), 0, []
        for block in self.exits:
            tokens = self.run_blocks(tokens, done, block)
            done = block
            features.append(self.exit_features(tokens))
        features.append(self.final_features(self.run_blocks(tokens, done, self.depth)))
        return torch.stack(features, dim=1)

    def logits_from_features(self, features: ExitFeatures) -> torch.Tensor:
        """Logits of every exit and the final output from recorded features: ``[N, exits + 1, classes]``."""
        columns = features.columns(self.exits)
        heads = [*self.exit_heads, self.final_head]
        with torch.inference_mode():
            feats = features.features.to(next(heads[0].parameters()).device)
            return torch.stack([head(feats[:, col]) for head, col in zip(heads, columns)], dim=1).cpu()

    def fit_heads(
        self,
        train: ExitFeatures,
        epochs: int = 30,
        lr: float = 3e-3,
        batch_size: int = 256,
        weight_decay: float = 1e-4,
        seed: int = 0,
    ) -> pd.DataFrame:
        """Train this variant's heads on recorded (frozen-backbone) features; per-epoch loss and top-1 per head.

        ``same`` trains nothing. ``finetune`` / ``scratch`` fit the shared head on every exit's features and the
        final features together; ``separate`` fits each exit's head on its own exit's features.
        """
        if self.variant == "same":
            return pd.DataFrame()
        columns = train.columns(self.exits)
        if self.variant == "separate":
            jobs = [(f"exit_{b}", head, [col]) for b, head, col in zip(self.exits, self.exit_heads, columns)]
        else:
            jobs = [("shared", self.final_head, columns)]
        rows = []
        for name, head, cols in jobs:
            x = train.features[:, cols].reshape(-1, train.features.shape[-1])  # [N * len(cols), D]
            y = train.targets.repeat_interleave(len(cols))  # row-major: each image's columns are adjacent
            for epoch, loss, top1 in fit_linear(head, x, y, epochs, lr, batch_size, weight_decay, seed):
                rows.append({"head": name, "epoch": epoch, "loss": loss, "train_top1": top1})
        return pd.DataFrame(rows)


def fit_linear(
    head: nn.Linear,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    seed: int,
) -> list[tuple[int, float, float]]:
    """Train a linear head on features ``x`` ``[N, D]`` with labels ``[N]``: AdamW + cosine, in place.

    Returns ``(epoch, mean loss, top-1 %)`` per epoch. Runs where the head lives; features are small.
    """
    device = head.weight.device
    x, y = x.to(device), y.to(device)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * max(1, -(-len(x) // batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    history = []
    head.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=generator).to(device)
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        for rows in order.split(batch_size):
            logits = head(x[rows])
            loss = F.cross_entropy(logits, y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            totals += torch.stack([loss.detach().double() * len(rows), (logits.argmax(-1) == y[rows]).sum().double()])
        loss_sum, correct = totals.tolist()
        history.append((epoch, loss_sum / len(x), 100 * correct / len(x)))
    head.eval()
    return history


# ----------------------------------------------------------------------------------------------------------
# Recorded features: run a data set through the backbone once, evaluate any head / threshold offline


@dataclass
class ExitFeatures:
    """Pre-logits features of a data set at some exits and after the last block."""

    features: torch.Tensor  # [N, len(exits) + 1, D]; the last column is after the final block
    targets: torch.Tensor  # [N]
    exits: tuple[int, ...]
    depth: int

    def columns(self, exits: Sequence[int]) -> list[int]:
        """Column of each of ``exits`` followed by the final column; the exits must have been recorded."""
        missing = [b for b in exits if b not in self.exits]
        if missing:
            raise ValueError(f"exits {missing} were not recorded: these features hold exits {self.exits}")
        return [self.exits.index(b) for b in exits] + [len(self.exits)]


def record_loader(
    model: MultiExitViT, loader: Iterable, device: str | torch.device = "cpu", progress: bool = False
) -> ExitFeatures:
    """Features at ``model``'s exits and after the last block for every image of ``loader`` (one pass)."""
    from tqdm.auto import tqdm

    model.eval().to(device)
    features, targets = [], []
    for images, labels in tqdm(loader, desc="recording exit features", leave=False, disable=not progress):
        features.append(model.record_features(images.to(device)).float().cpu())
        targets.append(torch.as_tensor(labels))
    return ExitFeatures(torch.cat(features), torch.cat(targets), model.exits, model.depth)


# ----------------------------------------------------------------------------------------------------------
# FLOP costs of exiting


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


def _count(fn, *args) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return float(counter.get_total_flops())


def exit_costs(model: MultiExitViT, input_size: tuple[int, int, int]) -> ExitCosts:
    """Count each piece once on one image with torch's FlopCounterMode (CPU or the model's device)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            x = torch.randn(1, *input_size, device=device)
            embed = _count(model.embed, x)
            tokens = model.embed(x)
            blocks = []
            for block in model.vit.blocks:
                blocks.append(_count(block, tokens))
                tokens = block(tokens)
            exit_head = _count(lambda t: model.exit_heads[0](model.exit_features(t)), tokens)
            final_head = _count(model.final_logits, tokens)
    finally:
        model.train(was_training)
    return ExitCosts(embed, tuple(blocks), exit_head, final_head)
