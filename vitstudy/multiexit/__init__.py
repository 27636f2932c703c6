"""Multi-exit ViT: an intermediate block feeds a classifier and confident images return early.

The method core, used by notebooks 01-03 and 07 through ``vitstudy.experiments``:

- ``exits``: pure tensor maths: confidences, the exit decision, batch split/compact/scatter, offline ``simulate``.
- ``model``: ``MultiExitViT`` (knobs + forward; on a SkipViT-patched backbone it drops tokens as SkipViT does,
  ``SkipExitViT`` insists on one) and ``ExitOutput``.
- ``heads``: record exit features once (cached), fit heads on them, logits from them.
- ``costs``: FLOP accounting of an exit histogram (``ExitCosts``, ``exit_costs``).
- ``study``: ``ExitStudy``, the offline container (backbone, recorded features, fitted heads; evaluates any
  setting without the backbone); ``vitstudy.experiments.multiexit.study`` builds it for a scale's model and data.
- ``joint``: the ``joint`` variant, exits trained with the backbone (deep supervision + self-distillation):
  ``JointExitViT``, ``joint_loss`` / ``training_loss`` (the training loop's ``loss_fn``), ``add_joint`` (into a study).
- ``explorer``: ``explore() -> widgets.ExplorerView`` and ``explorer_widget()``, drawn from an ``ExitStudy``.

Imports go one way: exits <- model <- heads, costs <- study <- joint, explorer. Nothing here imports
``vitstudy.experiments`` (the tables, budgets and plots of each notebook live there).
"""

from .costs import ExitCosts, exit_costs
from .exits import (
    CONFIDENCE_FNS,
    CONFIDENCES,
    POLICIES,
    Simulation,
    check_exits,
    check_threshold,
    compact,
    confidence,
    entropy_confidence,
    exit_decision,
    margin_confidence,
    max_softmax,
    simulate,
)
from .explorer import explore, explorer_figure, explorer_widget, readout
from .heads import (
    ExitFeatures,
    fit_heads,
    fit_linear,
    fitted_heads,
    logits_from_features,
    record_features,
    record_loader,
    recorded_features,
)
from .joint import (
    DISTILL_TEMPERATURE,
    DISTILL_WEIGHT,
    JointExitViT,
    JointLossTerms,
    add_joint,
    distillation,
    joint_loss,
    joint_loss_terms,
    training_loss,
)
from .model import DEFAULT_EXITS, FROZEN_VARIANTS, VARIANTS, ExitOutput, MultiExitViT, SkipExitViT
from .study import EXIT_SETS, ExitStudy, exits_label, parse_exits, summarize

__all__ = [
    "CONFIDENCES",
    "CONFIDENCE_FNS",
    "DEFAULT_EXITS",
    "DISTILL_TEMPERATURE",
    "DISTILL_WEIGHT",
    "EXIT_SETS",
    "FROZEN_VARIANTS",
    "POLICIES",
    "VARIANTS",
    "ExitCosts",
    "ExitFeatures",
    "ExitOutput",
    "ExitStudy",
    "JointExitViT",
    "JointLossTerms",
    "MultiExitViT",
    "Simulation",
    "SkipExitViT",
    "add_joint",
    "check_exits",
    "check_threshold",
    "compact",
    "confidence",
    "distillation",
    "entropy_confidence",
    "exit_costs",
    "exit_decision",
    "exits_label",
    "explore",
    "explorer_figure",
    "explorer_widget",
    "readout",
    "fit_heads",
    "fit_linear",
    "fitted_heads",
    "joint_loss",
    "joint_loss_terms",
    "logits_from_features",
    "margin_confidence",
    "max_softmax",
    "parse_exits",
    "record_features",
    "record_loader",
    "recorded_features",
    "simulate",
    "summarize",
    "training_loss",
]
