"""Where a cold grid's time goes: load, then per method its merge, its own training, generation and
program execution.

    python scripts/bench_grid.py                      # micro, seed 0, every method, empty cache
    python scripts/bench_grid.py --suite tiny.yaml --method cat --method ties

It runs `run_grid` as `soupbench run` does (into a temporary database; the cache is a new empty
folder unless --cache is given, so with a release nothing is trained and without one the base and
experts are built) and times the pieces from inside: `Trainer.train_lora` / `Trainer.fit` (a
method's own training), `benchmark.sandbox.run_programs` (a task's programs, run in one batch), and the
runner's own merge and eval seconds per merged model. Generation is eval time minus execution.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="micro")
    parser.add_argument("--seed", type=int, default=None, help="default: the suite's first seed")
    parser.add_argument("--method", action="append", default=None)
    parser.add_argument("--cache", default=None, help="SOUPBENCH_CACHE to use (default: a new empty one)")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="soupbench-bench-grid-")
    os.environ["SOUPBENCH_CACHE"] = args.cache or str(Path(scratch) / "cache")

    started = time.perf_counter()
    from benchmark import runner, sandbox, training
    from benchmark.storage import open_store
    from benchmark.suite import load_suite

    timers: dict[str, float] = defaultdict(float)

    def timed(owner, name, key):
        original = getattr(owner, name)

        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                timers[key] += time.perf_counter() - start

        setattr(owner, name, wrapper)

    timed(training.Trainer, "train_lora", "training")
    timed(training.Trainer, "fit", "training")
    # lm-eval loads the tasks' filter module by path when the tasks load, and it binds the sandbox's
    # `run_programs` then: patched here, before any task is loaded.
    timed(sandbox, "run_programs", "execution")
    rows: list[tuple] = []
    load: dict[str, float] = {}
    grid_started = [0.0]

    def stored(records):
        ok = [r for r in records if r.status == "ok"]
        if not ok:
            rows.append((records[0].method, ", ".join(r.task for r in records), float("nan"), 0, 0, 0, "failed"))
        else:
            evaluation = sum(r.eval_seconds for r in ok)
            rows.append((ok[0].method, ", ".join(r.task for r in ok), ok[0].merge_seconds, timers["training"],
                         evaluation - timers["execution"], timers["execution"], ""))
        timers.clear()

    def log(message: str) -> None:
        if "base model ready" in message:
            load["base"] = time.perf_counter() - started
        if message.startswith("experts for seed"):
            load["experts"] = float(message.split(" in ")[1].split(" s")[0])
            timers.clear()  # expert training is load, not a method's own training
            grid_started[0] = time.perf_counter()
        print(message, flush=True)

    suite = load_suite(args.suite)
    seed = suite.seeds[0] if args.seed is None else args.seed
    store = open_store(f"sqlite:///{Path(scratch) / 'bench.db'}")
    runner.run_grid(suite, store, methods=args.method, seeds=[seed], reporter=runner.Reporter(log=log, stored=stored))
    store.close()
    total = time.perf_counter() - started

    print(f"\n{suite.name}, seed {seed}, cache {os.environ['SOUPBENCH_CACHE']}")
    print(f"load: base {load.get('base', 0):.1f} s (imports and data included), experts {load.get('experts', 0):.1f} s")
    print(f"{'method':<18} {'tasks':<22} {'merge':>8} {'training':>9} {'generation':>11} {'execution':>10}")
    for method, tasks, merge, train, gen, execution, note in rows:
        print(f"{method:<18} {tasks:<22} {merge:>8.1f} {train:>9.1f} {gen:>11.1f} {execution:>10.1f} {note}")
    merge = sum(r[2] for r in rows if r[2] == r[2])
    print(f"{'all':<18} {'':<22} {merge:>8.1f} {sum(r[3] for r in rows):>9.1f} {sum(r[4] for r in rows):>11.1f} "
          f"{sum(r[5] for r in rows):>10.1f}")
    print(f"merge includes training; grid {time.perf_counter() - grid_started[0]:.1f} s; "
          f"whole command {total:.1f} s")


if __name__ == "__main__":
    main()
