"""The README is a newcomer's page: small, no commit hashes, no dead local links."""

import re
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_BYTES = 15_000  # a README a newcomer reads in five minutes


def test_readme_is_under_15_kb():
    """README.md stays under 15,000 bytes: method, history and results live in docs/, CHANGELOG.md, RESULTS.md."""
    assert len(README.read_bytes()) <= MAX_BYTES


def test_readme_names_no_commit_hash():
    """No 7-40 digit hex word (a commit hash) in the README: history lives in CHANGELOG.md, by date."""
    assert not re.findall(r"\b[0-9a-f]{7,40}\b", README.read_text())


def test_readme_links_to_files_that_exist():
    """Every relative link of the README points at a file or folder of the repository."""
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not missing


def test_from_scratch_numbers_come_from_the_committed_tables():
    """Every decimal number in the README paragraphs that cite ``08_verdicts`` is a value of the committed
    figures/scratch/tables/08_verdicts.csv (a difference, an interval's end, a paper's size, a resolvable width) or
    08_summary.csv (a row's top-1 or its spread over seeds), to 2 decimals: the README says what the committed
    tables say, not what a session remembered."""
    tables = ROOT / "figures" / "scratch" / "tables"
    values = [pd.read_csv(tables / f"{name}.csv").select_dtypes("number") for name in ("08_verdicts", "08_summary")]
    known = {f"{abs(v):.2f}" for frame in values for v in frame.to_numpy().ravel() if v == v}
    paragraphs = [p for p in README.read_text().split("\n\n") if "08_verdicts" in p]
    assert paragraphs
    numbers = [n for p in paragraphs for n in re.findall(r"\d+\.\d+", p)]
    assert numbers and not [n for n in numbers if n not in known]
