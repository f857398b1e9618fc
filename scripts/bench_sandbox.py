"""What it costs to run a grid's programs in the sandbox: the programs a stored grid generated,
run again as `ExecuteProgram` runs them (one batch per run and task, in the stored order).

    python scripts/bench_sandbox.py soupbench.db            # every program of the database
    python scripts/bench_sandbox.py soupbench.db --limit 600 --workers 8
    python scripts/bench_sandbox.py --trivial 200           # 200 distinct `print(2 + 3)`: the sandbox's own cost

Prints the number of programs, how many distinct sources there are, the wall time and the time
per program, with the result memo (`run_programs` as the harness calls it) and without it (each
program run afresh). The two runs must agree on every result's `ok` and stdout; the script says
if they do not.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from itertools import groupby
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def stored_batches(db: str, limit: int | None) -> list[list[str]]:
    """Each (run, task)'s non-blank generations of the program tasks, in stored order."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT s.run_id, s.generation FROM samples s JOIN runs r ON r.id = s.run_id "
            "WHERE s.executed IS NOT NULL ORDER BY s.run_id, s.doc_index").fetchall()
    batches, total = [], 0
    for _, group in groupby(rows, key=lambda row: row[0]):
        programs = [gen for _, gen in group if gen.strip()]
        if limit is not None:
            programs = programs[: max(0, limit - total)]
        if programs:
            batches.append(programs)
            total += len(programs)
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", nargs="?", help="a SoupBench SQLite database with stored samples")
    parser.add_argument("--trivial", type=int, default=None, metavar="N",
                        help="instead of a database: N distinct one-line programs (what isolation costs)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many programs")
    parser.add_argument("--workers", type=int, default=8, help="as ExecuteProgram on 2 cores")
    args = parser.parse_args()

    from benchmark import sandbox
    from benchmark.sandbox import SandboxLimits, run_program, run_programs

    if (args.db is None) == (args.trivial is None):
        parser.error("give a database or --trivial N")
    batches = ([[f"print(2 + 3)  # {i}" for i in range(args.trivial)]] if args.trivial
               else stored_batches(args.db, args.limit))
    programs = [code for batch in batches for code in batch]
    print(f"{len(programs)} programs in {len(batches)} batches, {len(set(programs))} distinct sources; "
          f"sandbox: {sandbox.isolation_report().get('backend', '?')}")
    limits = SandboxLimits()
    run_program("print(1)", limits)  # the interpreter probe, once, outside the timings

    clear = sandbox._MEMO.clear
    clear()
    start = time.perf_counter()
    memo = [r for batch in batches for r in run_programs(batch, limits, workers=args.workers)]
    with_memo = time.perf_counter() - start

    start = time.perf_counter()
    fresh = []
    for batch in batches:
        clear()
        fresh += run_programs(batch, limits, workers=args.workers)
        clear()
    without = time.perf_counter() - start
    # A copy within one batch still runs once in the second pass: count those runs honestly.
    runs_without = sum(len(set(batch)) for batch in batches)

    n = max(1, len(programs))
    print(f"with the memo:    {with_memo:7.1f} s  {1000 * with_memo / n:6.1f} ms per program")
    print(f"memo per batch:   {without:7.1f} s  {1000 * without / max(1, runs_without):6.1f} ms per run "
          f"({runs_without} runs)")
    differ = sum((a.ok, a.stdout) != (b.ok, b.stdout) for a, b in zip(memo, fresh))
    print(f"results that differ between the passes: {differ}")


if __name__ == "__main__":
    main()
