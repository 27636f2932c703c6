"""Multi-exit ViT: an intermediate block feeds a classifier and confident images return early (notebooks 01-03, 07).

- ``exits``: pure tensor maths: confidences, the exit decision, batch split/compact/scatter, offline ``simulate``.
- ``model``: ``MultiExitViT`` (knobs + forward) and ``ExitOutput``.
- ``features``: record exit features once (cached), fit heads on them, logits from them.
- ``costs``: FLOP accounting of an exit histogram (``ExitCosts``, ``exit_costs``).
- ``study``: the per-scale ``ExitBudget``, ``ExitStudy`` (prepare / evaluate offline), threshold sweep,
  operating point, the batch-rule study.
- ``tables``: the timed tables ``table_5_1``, ``table_5_2``, ``table_5_3`` (named after the report's), the speed
  targets, the report's numbers beside ours, and the timing they share (``measure_interleaved``).
- ``plots``: the figures. ``explorer``: ``explore() -> widgets.ExplorerView`` and ``explorer_widget()``.

Imports go one way: exits <- model <- features, costs <- study <- tables, plots, explorer.
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
from .explorer import explore, explorer_figure, explorer_widget
from .features import (
    ExitFeatures,
    fit_heads,
    fit_linear,
    logits_from_features,
    record_features,
    record_loader,
    recorded_features,
)
from .model import DEFAULT_EXITS, VARIANTS, ExitOutput, MultiExitViT
from .plots import accuracy_speed_curves, batch_rule_plot, device_speedup_bars, speed_bars
from .study import (
    EXIT_BUDGETS,
    EXIT_SETS,
    PAPER_MODEL,
    SWEEP_THRESHOLDS,
    VARIANT_LABELS,
    ExitBudget,
    ExitStudy,
    batch_rule_exit_rates,
    build_study,
    chance_floor_table,
    choose_operating_point,
    exit_budget,
    exits_label,
    prepare,
    required_confident_share,
    study_model,
    summarize,
    threshold_sweep,
)
from .tables import (
    TABLE_5_1_COLUMNS,
    batch_exits,
    beside_report,
    beside_report_5_1,
    measure_interleaved,
    measured_points,
    performance_table,
    table_5_1,
    table_5_2,
    table_5_3,
    timing_batch,
)

__all__ = [
    "CONFIDENCES",
    "CONFIDENCE_FNS",
    "DEFAULT_EXITS",
    "EXIT_BUDGETS",
    "EXIT_SETS",
    "PAPER_MODEL",
    "POLICIES",
    "SWEEP_THRESHOLDS",
    "TABLE_5_1_COLUMNS",
    "VARIANTS",
    "VARIANT_LABELS",
    "ExitBudget",
    "ExitCosts",
    "ExitFeatures",
    "ExitOutput",
    "ExitStudy",
    "MultiExitViT",
    "Simulation",
    "accuracy_speed_curves",
    "batch_exits",
    "batch_rule_exit_rates",
    "batch_rule_plot",
    "beside_report",
    "beside_report_5_1",
    "build_study",
    "chance_floor_table",
    "check_exits",
    "check_threshold",
    "choose_operating_point",
    "compact",
    "confidence",
    "device_speedup_bars",
    "entropy_confidence",
    "exit_budget",
    "exit_costs",
    "exit_decision",
    "exits_label",
    "explore",
    "explorer_figure",
    "explorer_widget",
    "fit_heads",
    "fit_linear",
    "logits_from_features",
    "margin_confidence",
    "max_softmax",
    "measure_interleaved",
    "measured_points",
    "performance_table",
    "prepare",
    "record_features",
    "record_loader",
    "recorded_features",
    "required_confident_share",
    "scatter_rows",
    "simulate",
    "speed_bars",
    "split_exiting",
    "study_model",
    "summarize",
    "table_5_1",
    "table_5_2",
    "table_5_3",
    "threshold_sweep",
    "timing_batch",
]
