"""`gsm_hard` metrics: `exec_accuracy`, the response's `solution()` run in the sandbox returns the answer
(within 1e-3, exit 0 in time); `program_ran`, it exits 0 in time at all.

The YAML's `execute` filter turns each response into a program (its `solution()` and a line that
prints what it returns) and runs all of them in one parallel batch; this scores its records.
"""

from __future__ import annotations

from tasks._common.scoring import score_execution


def process_results(doc: dict, results: list[dict]) -> dict[str, float]:
    return score_execution(doc, results)
