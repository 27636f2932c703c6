"""vitstudy: a notebook study of faster Vision Transformers (multi-exit ViT, SkipViT) built on timm.

Two method cores of the same shape, ``multiexit`` and ``skipvit`` (the maths, the timm extension, the costs, the
explorer), on shared mechanics (config, data, models, steps, train, bench, report, plots, widgets, ...), and
``experiments``: one module per notebook or hand-run measurement, using the cores. Imports go one way: shared <-
cores <- experiments <- notebooks. The README's Layout section has one line per file.
"""

__version__ = "0.1.0"
