"""Notebook 08's "What this run shows": sentences computed from :func:`.from_scratch.claim_verdicts` (a sibling
of :mod:`.from_scratch`, which would otherwise pass the 350-line limit)."""

from __future__ import annotations

import pandas as pd

from .sentences import is_missing, measured, number, paragraph


def findings(verdicts: pd.DataFrame) -> str:
    """What notebook 08 shows (Markdown): per claim the paper's difference, ours with its 95% paired interval and
    the verdict, then how many claims this run reproduces."""
    if verdicts.empty:
        return paragraph(["Do SkipViT's accuracy claims hold when every row trains from scratch? This run has no "
                          "claim with both of its rows trained."])  # fmt: skip
    sentences = ["Do SkipViT's accuracy claims hold when every row trains from scratch, over seeds?"]
    claims = []
    for row in verdicts.to_dict("records"):
        paper = "the paper gives no number" if is_missing(row["paper_diff"]) else (
            f"paper {number(row['paper_diff'], unit=' points')}"
        )  # fmt: skip
        claims.append(f"{row['claim']}: {paper}, ours {measured(row, name='diff', unit=' points')} over "
                      f"{row['pairs']} seed(s): {row['verdict']}")  # fmt: skip
    sentences.append("; ".join(claims) + ".")
    reproduced = int((verdicts["verdict"] == "reproduced").sum())
    resolvable = verdicts["resolvable"].dropna()
    smallest = f"; the smallest difference it resolves is {number(resolvable.min(), unit=' points')}" if len(
        resolvable
    ) else ""  # fmt: skip
    sentences.append(f"This run reproduces {reproduced} of {len(verdicts)} claims{smallest}.")
    return paragraph(sentences)
