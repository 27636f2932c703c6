"""Notebook 08's "What this run shows": sentences computed from :func:`.from_scratch_stats.claim_verdicts`, per
data set (a sibling of :mod:`.from_scratch`, which would otherwise pass the 350-line limit)."""

from __future__ import annotations

import pandas as pd

from ..sentences import is_missing, measured, number, paragraph
from .from_scratch_stats import DATASET_TITLES, RESOLVABLE_TARGET, with_dataset


def findings(verdicts: pd.DataFrame, finished: int | None = None, planned: int | None = None) -> str:
    """What notebook 08 shows (Markdown): per data set and claim the paper's difference, ours with its 95% paired
    interval and the verdict (and the seeds that would tell it), then how many claims this run reproduces and
    whether every claim resolves a difference of one point. ``finished`` of ``planned`` runs: an interim look."""
    interim = ""
    if finished is not None and planned is not None and finished < planned:
        interim = f"Interim: {finished} of {planned} runs have finished; every number below may still move."
    if verdicts.empty:
        return paragraph(
            [
                interim,
                "Do SkipViT's accuracy claims hold when every row trains from scratch? This run "
                "has no claim with both of its rows trained.",
            ]
        )
    sentences = [interim, "Do SkipViT's accuracy claims hold when every row trains from scratch, over seeds?"]
    for dataset, part in with_dataset(verdicts).groupby("dataset", sort=False):
        claims = []
        for row in part.to_dict("records"):
            paper = (
                "the paper gives no number"
                if is_missing(row["paper_diff"])
                else (f"paper {number(row['paper_diff'], unit=' points')}")
            )
            more = row.get("seeds_to_resolve")
            tell = "" if is_missing(more) else f", about {int(more)} seeds would tell it at this spread"
            claims.append(
                f"{row['claim']}: {paper}, ours {measured(row, name='diff', unit=' points')} over "
                f"{row['pairs']} seed(s): {row['verdict']}{tell}"
            )
        sentences.append(f"On {DATASET_TITLES.get(dataset, dataset)}: " + "; ".join(claims) + ".")
        reproduced = int((part["verdict"] == "reproduced").sum())
        contradicted = int(part["verdict"].str.startswith("contradicted").sum())
        resolvable = part["resolvable"].dropna()
        widest = ""
        if len(resolvable):
            within = "within" if resolvable.max() <= RESOLVABLE_TARGET else "not within"
            widest = (
                f"; it resolves differences of {number(resolvable.min(), unit=' points')} to "
                f"{number(resolvable.max(), unit=' points')}, {within} the 1-point target"
            )
        sentences.append(
            f"There this run reproduces {reproduced} and contradicts {contradicted} of {len(part)} claims{widest}."
        )
    return paragraph(sentences)
