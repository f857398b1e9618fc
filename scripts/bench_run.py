"""Measure a cold and a warm `soupbench run` (the README's main job) and print the figures.

Cold: an empty cache and an empty database, so the base is pretrained, the experts trained and
every cell computed. Warm: the same command again over the same database; it must add no row.
Usage: python scripts/bench_run.py [--suite micro] [--seeds 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def count_rows(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"select count(*) from {t}").fetchone()[0] for t in ("runs", "scores", "samples")}


def timed_run(args: list[str], env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as handle:
        subprocess.run([sys.executable, "-m", "benchmark.cli", "run", *args], env=env, check=True,
                       stdout=handle, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="micro")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="folder for the cache, database and logs (default: temporary)")
    options = parser.parse_args()
    work = options.keep or Path(tempfile.mkdtemp(prefix="soupbench-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "bench.db"
    env = {**os.environ, "SOUPBENCH_CACHE": str(work / "cache"), "COLUMNS": "160"}
    args = ["--suite", options.suite, "--seeds", str(options.seeds), "--db", str(db)]

    cold = timed_run(args, env, work / "cold.log")
    after_cold = count_rows(db)
    warm = timed_run(args, env, work / "warm.log")
    after_warm = count_rows(db)
    print(f"cold run: {cold:.1f} s  ({after_cold['runs']} runs, {after_cold['samples']} samples stored)")
    print(f"warm run: {warm:.1f} s  (rows added: {after_warm['runs'] - after_cold['runs']})")
    print(f"logs and database in {work}")
    print((work / "cold.log").read_text()[-6000:])


if __name__ == "__main__":
    main()
