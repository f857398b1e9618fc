"""`math` metric: `exact_match`, the last number of the answer equals the gold answer (within 1e-3).

The answer reaches `process_results` already cut at its first stop string (the YAML's `answer`
filter), so "3 + 4 = 7. The answer is 7." scores 7 and whatever follows a stop is ignored.
"""

from __future__ import annotations

from tasks._common.scoring import last_number, matches


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"exact_match": float(matches(last_number(results[0]), doc["answer"]))}
