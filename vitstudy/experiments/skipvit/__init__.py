"""SkipViT's experiments: one module per notebook, and ``common`` for what several of them share.

- ``common``: training one SkipViT row (04, 05, 08) and timing rows' training steps (04, 09, ``measure.isolation``).
- ``layers_ratios``: notebook 04, Table 1 (drop layers, ratios, skip layer), the placement question, its figures.
- ``warmup``: notebook 05, Table 3 (warm-up or not).
- ``patch_drop_explorer``: notebook 06, the model and images the dropped-patch explorer shows.
- ``from_scratch``: notebook 08, the accuracy claims trained from scratch with seeds, their statistics and verdicts.
- ``memory_and_size``: notebook 09, activation memory and the headline setting on larger models.

A notebook's module imports ``common``, never another notebook's module.
"""
