"""Multi-exit ViT: an intermediate block feeds a classifier and confident images return early.

The method core, used by notebooks 01-03 and 07 through ``vitstudy.experiments``:

- ``exits``: pure tensor maths: confidences, the exit decision, batch split/compact/scatter, offline ``simulate``.
- ``model``: ``MultiExitViT`` (knobs + forward) and ``ExitOutput``.
- ``heads``: record exit features once (cached), fit heads on them, logits from them.
- ``costs``: FLOP accounting of an exit histogram (``ExitCosts``, ``exit_costs``).
- ``study``: ``ExitStudy``, the offline container (backbone, recorded features, fitted heads; evaluates any
  setting without the backbone), built by ``prepare`` (a scale's model and data) or ``build_study``.
- ``explorer``: ``explore() -> widgets.ExplorerView`` and ``explorer_widget()``, drawn from an ``ExitStudy``.

Imports go one way: exits <- model <- heads, costs <- study <- explorer. Nothing here imports
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
    scatter_rows,
    simulate,
    split_exiting,
)
from .explorer import explore, explorer_figure, explorer_widget, readout
from .heads import (
    ExitFeatures,
    fit_heads,
    fit_linear,
    logits_from_features,
    record_features,
    record_loader,
    recorded_features,
)
from .model import DEFAULT_EXITS, VARIANTS, ExitOutput, MultiExitViT
from .study import (
    EXIT_SETS,
    PAPER_MODEL,
    ExitStudy,
    build_study,
    exits_label,
    paired_loss_interval,
    parse_exits,
    prepare,
    study_model,
    summarize,
)

__all__ = [
    "CONFIDENCES",
    "CONFIDENCE_FNS",
    "DEFAULT_EXITS",
    "EXIT_SETS",
    "PAPER_MODEL",
    "POLICIES",
    "VARIANTS",
    "ExitCosts",
    "ExitFeatures",
    "ExitOutput",
    "ExitStudy",
    "MultiExitViT",
    "Simulation",
    "build_study",
    "check_exits",
    "check_threshold",
    "compact",
    "confidence",
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
    "logits_from_features",
    "margin_confidence",
    "max_softmax",
    "paired_loss_interval",
    "parse_exits",
    "prepare",
    "record_features",
    "record_loader",
    "recorded_features",
    "scatter_rows",
    "simulate",
    "split_exiting",
    "study_model",
    "summarize",
]
