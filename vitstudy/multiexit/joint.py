"""The ``joint`` variant: exits trained together with the backbone, not fitted on its frozen features.

Every head learns at once: deep supervision (cross-entropy at every exit and at the final head) plus self-distillation
from the final head to each exit, LGViT's prediction distillation (Xu et al., "LGViT: Dynamic Early Exiting for
Accelerating Vision Transformer", ACM MM 2023): the KL divergence between the exit's and the final head's logits,
both softened by a temperature, the final head's detached so that it teaches and is not pulled towards the exits.

:class:`JointExitViT` is what the package's training loop trains (``vitstudy.train.train(...,
loss_fn=training_loss)``); :meth:`JointExitViT.exit_model` turns it into a ``MultiExitViT`` of variant ``joint``
for any subset of its exits; :func:`add_joint` records the trained backbone's features and adds the variant to an
:class:`~.study.ExitStudy`, beside the heads fitted on the frozen backbone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..config import check
from ..models import forward_start
from .heads import recorded_features
from .model import DEFAULT_EXITS, MultiExitViT
from .study import ExitStudy

# LGViT's values, from its code (github.com/falcon-xu/LGViT): the temperature is `T = 2` in the prediction
# distillation of models/deit_highway/modeling_highway_deit.py; the weight is `--loss_coefficient 0.3` of
# scripts/train_distillation_deit.sh, mixing each exit's loss as (1 - 0.3) * cross-entropy + 0.3 * distillation.
DISTILL_TEMPERATURE = 2.0
DISTILL_WEIGHT = 0.3

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class JointLossTerms:
    """The joint loss of one batch, term by term."""

    final: torch.Tensor  # scalar: the final head's cross-entropy
    exit_ce: torch.Tensor  # [exits]: each exit's cross-entropy (deep supervision)
    distillation: torch.Tensor  # [exits]: each exit's KL to the final head (self-distillation)

    def total(self, weight: float = DISTILL_WEIGHT) -> torch.Tensor:
        """Final cross-entropy plus, at every exit, ``(1 - weight) * cross-entropy + weight * distillation``."""
        return self.final + ((1 - weight) * self.exit_ce + weight * self.distillation).sum()


def distillation(exit_logits: torch.Tensor, final_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(final / T) || softmax(exit / T))`` per exit, averaged over images: ``[B, E, C]`` exit
    logits and ``[B, C]`` final logits (detached here: the teacher gets no gradient) -> ``[E]``.

    Hinton et al.'s scaling by T^2 keeps the term's gradients the size of a cross-entropy's; LGViT's code divides the
    same sum by the number of classes too, which would shrink it tenfold on 10 classes."""
    student = F.log_softmax(exit_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(final_logits.detach().float() / temperature, dim=-1).unsqueeze(1).expand_as(student)
    kl = F.kl_div(student, teacher, reduction="none", log_target=True).sum(-1)  # [B, E]
    return kl.mean(0) * temperature**2


def joint_loss_terms(
    logits: torch.Tensor,
    targets: torch.Tensor,
    criterion: Criterion = F.cross_entropy,
    temperature: float = DISTILL_TEMPERATURE,
) -> JointLossTerms:
    """The terms of the joint loss from every head's logits ``[B, exits + 1, C]`` (last: the final head).

    ``criterion`` is the training loop's (plain, label-smoothed or mixup's soft-target cross-entropy)."""
    check(logits.ndim == 3 and logits.shape[1] >= 2, "logits.shape", tuple(logits.shape), "[B, exits + 1, classes]")
    exit_ce = torch.stack([criterion(logits[:, i], targets) for i in range(logits.shape[1] - 1)])
    return JointLossTerms(
        criterion(logits[:, -1], targets), exit_ce, distillation(logits[:, :-1], logits[:, -1], temperature)
    )


def joint_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    criterion: Criterion = F.cross_entropy,
    temperature: float = DISTILL_TEMPERATURE,
    weight: float = DISTILL_WEIGHT,
) -> torch.Tensor:
    """Deep supervision plus self-distillation, one scalar (:meth:`JointLossTerms.total`)."""
    return joint_loss_terms(logits, targets, criterion, temperature).total(weight)


def training_loss(
    output: torch.Tensor, targets: torch.Tensor, criterion: Criterion
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loop's ``loss_fn`` for :class:`JointExitViT`: the joint loss, and the final head's logits (what
    the loop's train top-1 counts)."""
    return joint_loss(output, targets, criterion), output[:, -1]


class JointExitViT(nn.Module):
    """A timm ViT with a classifier after each of ``exits`` (1-indexed blocks), trained with the backbone.

    Training mode returns every head's logits ``[B, exits + 1, C]`` (last: the final head), which
    :func:`training_loss` turns into one loss; eval mode is the plain ViT's forward ``[B, C]``, so the training
    loop's validation and test measure the final head as for any model (torchvision's Inception likewise returns
    its auxiliary logits in training mode only). The heads' layout is variant ``joint``'s (``MultiExitViT``: one
    head per exit, each starting as a copy of the final head, which stays timm's own).
    """

    def __init__(self, vit: nn.Module, exits: Iterable[int] = DEFAULT_EXITS) -> None:
        super().__init__()
        layout = MultiExitViT(vit, exits, "joint")  # checks the ViT, its classifier head and the exits
        self.vit, self.exits, self.exit_heads = layout.vit, layout.exits, layout.exit_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_logits(x) if self.training else self.vit(x)

    def all_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every exit head and the final head, ``[B, C, H, W] -> [B, exits + 1, classes]``, from timm's
        own pieces (the exit features are ``MultiExitViT.exit_features``': final norm + timm's pooling)."""
        tokens, done, logits = forward_start(self.vit, x), 0, []
        for block, head in zip(self.exits, self.exit_heads):
            for layer in self.vit.blocks[done:block]:
                tokens = layer(tokens)
            done = block
            logits.append(head(self.vit.forward_head(self.vit.norm(tokens), pre_logits=True)))
        for layer in self.vit.blocks[done:]:
            tokens = layer(tokens)
        logits.append(self.vit.forward_head(self.vit.norm(tokens)))
        return torch.stack(logits, dim=1)

    def exit_model(self, exits: Sequence[int] | None = None) -> MultiExitViT:
        """A ``MultiExitViT`` of variant ``joint`` at ``exits`` (a subset of the trained ones; default all of them)
        that shares this backbone and the trained heads of those exits."""
        exits = self.exits if exits is None else tuple(exits)
        check(set(exits) <= set(self.exits), "exits", exits, f"a subset of the trained exits {self.exits}")
        model = MultiExitViT(self.vit, exits, "joint")
        model.exit_heads = nn.ModuleList(self.exit_heads[self.exits.index(b)] for b in model.exits)
        return model.eval()


def add_joint(
    study: ExitStudy,
    joint: JointExitViT,
    exit_sets: Iterable[Sequence[int]],
    record_files: Mapping[str, Path] | None = None,
    history: pd.DataFrame | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> None:
    """Add the trained ``joint`` to ``study``: its backbone's features at its exits on every split (recorded once,
    cached in ``record_files[split]`` when given) and a ``joint`` setting per exit set (each a subset of its exits)."""
    recorder = MultiExitViT(joint.vit, joint.exits).eval()
    features = {
        split: recorded_features(
            recorder,
            getattr(study.splits, split),
            study.scale.eval_batch_size,
            (record_files or {}).get(split),
            device,
            progress,
        )
        for split in study.features
    }
    joint.cpu().eval()  # recorded: from here on, models move to a device only to be timed
    models = {tuple(exits): joint.exit_model(exits) for exits in exit_sets}
    study.add_variant("joint", models, features, history)
