"""The README is a newcomer's page: small, no commit hashes, no dead local links, no link out of the repository, no
target judged met under a failed A/A control."""

import re
from pathlib import Path

import pandas as pd

from vitstudy.verdicts import NOT_TRUSTWORTHY, table_trust

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


def test_readme_links_stay_inside_the_repository():
    """Every link of the README is a relative path that resolves inside the repository: the documents and the
    methods' code are cited in docs/sources.md, not reached through a path outside the checkout or a web address."""
    links = re.findall(r"\]\(([^)#\s]+)", README.read_text())
    assert links
    outside = [link for link in links if "://" in link or not (ROOT / link).resolve().is_relative_to(ROOT)]
    assert not outside
    assert "../shared" not in README.read_text()


def test_readme_judges_no_target_met_under_a_failed_control():
    """A README paragraph that cites a committed timed table whose A/A control fails by its interval says "not
    trustworthy" and never calls a target met, reached or within."""
    failing = {path.stem for path in (ROOT / "figures" / "tables").glob("*.csv") if _control_fails(path)}
    assert failing
    cited = 0
    for paragraph in README.read_text().split("\n\n"):
        names = set(re.findall(r"`(\d\d_[a-z0-9_]+)`", paragraph)) & failing
        if not names:
            continue
        cited += 1
        flat = paragraph.replace("\n", " ")
        assert NOT_TRUSTWORTHY in flat or "no speed-up can be read" in flat.lower(), names
        assert not re.search(r"\b(within target|meets?|met|reach(es|ed)?)\b[^.]*\btarget", flat), names
    assert cited


def _control_fails(path: Path) -> bool:
    """Whether any timed group of the table at ``path`` has an A/A control that fails by its interval."""
    table = pd.read_csv(path)
    prefixes = [p for p in ("", "cpu_", "vit_small_", "small_") if f"{p}speedup_low" in table]
    groups = [g for _, g in table.groupby("batch_size")] if "batch_size" in table else [table]
    return any(table_trust(g, p).startswith(NOT_TRUSTWORTHY) for g in groups for p in prefixes)
