"""vitstudy: a notebook study of faster Vision Transformers (multi-exit ViT, SkipViT) built on timm.

Modules: config (scales, presets), data, models (factory + registered small ViTs), train, checkpoint, bench,
report, plots, widgets, reference, multiexit + exitstudy, skipvit + skipvit_study + skipvit_explorer.
"""

__version__ = "0.1.0"
