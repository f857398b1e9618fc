"""`manual_qa` metric: `exact_match`, the answer (cut at its first stop) is the fact's value after
normalisation (first line, case, surrounding blanks and full stop ignored)."""

from __future__ import annotations

from tasks._common.facts import score_fact


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return score_fact(doc, results)
