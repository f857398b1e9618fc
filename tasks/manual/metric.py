"""`manual` metric: `exact_match`, the completed statement (cut at its full stop) starts with the
fact's value as whole words ("45 hours" for 45; "459" is not 45), case and blanks ignored."""

from __future__ import annotations

from tasks._common.facts import score_fact


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return score_fact(doc, results, statement=True)
