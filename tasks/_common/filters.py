"""lm-eval filters the task YAMLs name with `!function tasks._common.filters.<Name>`.

A filter sees the responses of all documents of a task at once (`apply(resps, docs)`, one list of
responses per document), which is what lets every program of a task run in one parallel batch
instead of one at a time inside `process_results`.
"""

from __future__ import annotations

import os

from lm_eval.api.filter import Filter

from benchmark.sandbox import SandboxLimits, SandboxResult, parse_number, run_programs
from tasks._common.scoring import cut_at_stops, solution_program


class CutAtStops(Filter):
    """Cut each response at the first stop string; the same strings as `generation_kwargs.until`.

    HFLM already stops there, but not every lm-eval backend trims its output, so the metric does
    not rely on it."""

    def __init__(self, until: list[str] | tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.until = tuple(until)

    def apply(self, resps, docs):
        return [[cut_at_stops(r, self.until) for r in doc_resps] for doc_resps in resps]


class SolutionProgram(Filter):
    """Turn each response's `solution()` function into a program that prints what it returns
    (`scoring.solution_program`), for `ExecuteProgram` to run: GSM-Hard's PAL-style answers."""

    def apply(self, resps, docs):
        return [[solution_program(r) for r in doc_resps] for doc_resps in resps]


class ExecuteProgram(Filter):
    """Run every response as a Python program in the sandbox, all of a task's programs in one batch.

    Each response becomes a plain dict (so that lm-eval's logged samples keep it for drill-down):
    program, stdout (long output kept as head and tail), returncode, timed_out, ok (exited 0 in
    time), error (why not) and value (the last number printed, or None). A blank response is no
    program: it is not run and does not count as one that ran. A document's `program_prefix` (the
    opening of the program that its prompt ends with, as in HumanEval) is put before its response."""

    KEEP_CHARS = 1000  # of stdout's head and of its tail in the record; the value reads all of it

    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 512, workers: int | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.limits = SandboxLimits(timeout_s=float(timeout_s), memory_mb=int(memory_mb))
        # A run is mostly interpreter start-up, not CPU: a few per core keep the cores busy (100
        # trivial programs on 2 cores: 6.6 s one at a time, 4.6 s with 2 workers, 2.7 s with 8).
        self.workers = workers or min(16, 4 * (os.cpu_count() or 1))

    def apply(self, resps, docs):
        prefixes = [doc.get("program_prefix", "") if isinstance(doc, dict) else "" for doc in docs]
        programs = [[(prefix + r) if r.strip() else r for r in doc_resps]
                    for prefix, doc_resps in zip(prefixes, resps, strict=True)]
        results = iter(run_programs([p for doc_programs in programs for p in doc_programs if p.strip()],
                                    self.limits, workers=self.workers))
        return [[self._record(program, next(results) if program.strip() else None)
                 for program in doc_programs] for doc_programs in programs]

    def _record(self, program: str, res: SandboxResult | None) -> dict:
        if res is None:
            return {"program": program, "stdout": "", "returncode": None, "timed_out": False,
                    "ok": False, "error": "empty program", "value": None}
        stdout = res.stdout
        if len(stdout) > 2 * self.KEEP_CHARS:
            stdout = f"{stdout[:self.KEEP_CHARS]}\n[...]\n{stdout[-self.KEEP_CHARS:]}"
        return {"program": program, "stdout": stdout, "returncode": res.returncode,
                "timed_out": res.timed_out, "ok": res.ok, "error": res.error,
                "value": parse_number(res.stdout) if res.ok else None}
