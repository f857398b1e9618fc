"""`manual_math_code` metrics: `exec_accuracy`, the program run in the sandbox prints the answer (within 1e-3,
exit 0 in time); `program_ran`, it exits 0 in time at all.

The programs run in one parallel batch in the YAML's `execute` filter; this scores its records.
"""

from __future__ import annotations

from tasks._common.scoring import score_execution


def process_results(doc: dict, results: list[dict]) -> dict[str, float]:
    return score_execution(doc, results)
