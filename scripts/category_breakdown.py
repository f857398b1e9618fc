"""Accuracy per method and per category of a task's documents (e.g. per operation of `math_code`,
per attribute of `manual_qa`), from the stored samples: where a method composes and where not.

    python scripts/category_breakdown.py DB_OR_URL --suite micro --task math_code

Prints, per method, the accuracy in each category pooled over the stored seeds, and per seed in
brackets. An expert that scores well on a composite task by itself shows here which stories it
reads without the other skill (issue 11: the code expert alone reading divisions but not additions).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def breakdown(reader, suite: str, task: str) -> dict[str, dict[str, list[tuple[int, int, int]]]]:
    """{method: {category: [(seed, n, right), ...]}} of the ok runs of `task`."""
    runs = {run.id: run for run in reader.runs(suite=suite, status="ok") if run.task == task}
    table: dict[str, dict[str, list[tuple[int, int, int]]]] = defaultdict(lambda: defaultdict(list))
    for count in reader.category_counts(suite, task):
        run = runs.get(count.run_id)
        if run is not None:
            table[run.method][count.category].append((run.seed, count.n, count.n_correct))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db")
    parser.add_argument("--suite", default="micro")
    parser.add_argument("--task", default="math_code")
    args = parser.parse_args()
    from benchmark.results import open_readonly
    from benchmark.storage import resolve_db_url

    reader = open_readonly(resolve_db_url(args.db))
    table = breakdown(reader, args.suite, args.task)
    reader.close()
    if not table:
        raise SystemExit(f"no stored samples with categories for {args.suite}/{args.task}")
    categories = sorted({c for per in table.values() for c in per})
    print(f"{args.suite} / {args.task}: accuracy per category, pooled over seeds [per seed]")
    print(f"{'method':<18}" + "".join(f"{c:>26}" for c in categories))
    for method in sorted(table):
        cells = []
        for category in categories:
            entries = sorted(table[method].get(category, []))
            n, right = sum(e[1] for e in entries), sum(e[2] for e in entries)
            per_seed = "/".join(f"{r / k:.2f}" for _, k, r in entries if k)
            cells.append(f"{right / n:.2f} [{per_seed}]" if n else "n/a")
        print(f"{method:<18}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
