"""The study's experiments: one module per notebook or hand-run measurement, named for what it measures.

Each module holds its budget (one frozen dataclass and ``BUDGETS[scale]``), its runs, its tables and its plots, built
on the method cores (``vitstudy.multiexit``, ``vitstudy.skipvit``) and the shared modules. The cores never import
this package. Hand-run measurements expose ``measure()`` and run as ``python -m vitstudy measure NAME``.
"""
