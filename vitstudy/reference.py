"""Published numbers from the two source documents, as tidy CSV tables.

The CSVs under ``data/reference/`` are hand transcriptions; see the README there for column meanings
and for the ambiguities of the extracted text (Table 5.3 above all).
"""

from pathlib import Path

import pandas as pd

# Repository data dir, resolved from this file so it works from any working directory (notebooks, tests).
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "data" / "reference"

TABLES: dict[str, str] = {
    "multiexit_5.1": "multiexit_table5_1.csv",
    "multiexit_5.2": "multiexit_table5_2.csv",
    "multiexit_5.3": "multiexit_table5_3.csv",
    "skipvit_1": "skipvit_table1.csv",
    "skipvit_2": "skipvit_table2.csv",
    "skipvit_3": "skipvit_table3.csv",
}

# Read as text: "5.1" must not become a float, "4,7" / "0.30,0.30" are lists and "6" must not turn
# into an int beside them. skip_layer is empty for baseline/fused rows: nullable Int64 keeps it integer.
# Keys missing from a table are ignored by pandas.
_DTYPES: dict[str, type | str] = {"table": str, "drop_layers": str, "drop_ratios": str, "skip_layer": "Int64"}


def load_reference(table_id: str) -> pd.DataFrame:
    """Load one reference table by id (a key of ``TABLES``)."""
    if table_id not in TABLES:
        raise ValueError(f"unknown reference table {table_id!r}; allowed: {', '.join(TABLES)}")
    return pd.read_csv(REFERENCE_DIR / TABLES[table_id], dtype=_DTYPES)
