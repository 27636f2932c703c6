"""The hand-run A/A isolation measurement (vitstudy.measure.isolation), its pieces at tiny sizes."""

import pandas as pd

from vitstudy.bench import SMOKE_TIMING
from vitstudy.files import project_root
from vitstudy.measure import isolation


def test_compare_isolations_times_every_isolation_with_the_committed_columns():
    """One repeat: one row in one process, one with a worker per arm and one with a process per (round, arm), the
    committed table's columns. The smallest depth-12 model the headline row runs on (16 patch tokens, width 24):
    every process builds its arms, and what is checked is the table, not the model."""
    lines = []
    small = dict(img_size=8, patch_size=2, embed_dim=24)
    table, raw = isolation.compare_isolations(
        "vitstudy_tiny_patch4_28", (1, 8, 8), 10, 2, SMOKE_TIMING, repeats=1, log=lines.append, **small
    )
    committed = pd.read_csv(project_root() / "figures" / "tables" / f"{isolation.TABLE}.csv")
    assert list(table.columns) == list(committed.columns)
    assert list(table["isolation"]) == list(isolation.ISOLATIONS) and table["aa_speedup"].notna().all()
    assert set(raw["isolation"]) == set(isolation.ISOLATIONS) and len(lines) == len(isolation.ISOLATIONS)
