"""vitstudy: a notebook study of faster Vision Transformers (multi-exit ViT, SkipViT) built on timm.

Two method subpackages of the same shape, ``multiexit`` and ``skipvit`` (maths, model patch, study, tables,
plots, explorer), on shared modules: config (scales, validation), data, models (factory, ``forward_start``),
train, distributed, checkpoint, bench (timing, FLOPs, the comparison engine, profiles), report, plots,
widgets, reference, files, errors. The README's Layout section has one line per file.
"""

__version__ = "0.1.0"
