"""The Ray executor's overhead against the local executor, on the same grid and the same machine.

    python scripts/bench_executors.py                     # micro, seed 0, every method
    python scripts/bench_executors.py --suite tiny.yaml --method base --method ties

Both executors run the grid from an empty database with the same warm cache (the release's base
and experts, or built once before the timing starts), so what differs is the executor alone:
starting a local Ray instance, shipping tasks, each worker process importing the stack and loading
its own pool, and sending records back. The local run goes first, then the Ray run (one run each:
a grid takes minutes). Printed: wall seconds of each, cells computed, and ray / local. On one
machine the Ray executor cannot be faster: the figure is what a cluster pays for its fan-out.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="micro")
    parser.add_argument("--method", action="append", default=None)
    parser.add_argument("--seed", type=int, default=None, help="default: the suite's first seed")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray instance")
    parser.add_argument("--task-cpus", type=float, default=1.0, help="CPUs each Ray task reserves")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="soupbench-bench-executors-"))

    from benchmark.pool import Pool
    from benchmark.ray_executor import RayOptions, run_grid_ray
    from benchmark.runner import run_grid
    from benchmark.storage import open_store
    from benchmark.suite import load_suite

    suite = load_suite(args.suite)
    seed = suite.seeds[0] if args.seed is None else args.seed
    warm = Pool.open(suite, list(suite.tasks))  # base and experts ready before any timing
    warm.experts(seed)
    del warm

    timings = {}
    for name in ("local", "ray"):
        store = open_store(f"sqlite:///{scratch / f'{name}.db'}")
        start = time.perf_counter()
        if name == "local":
            summary = run_grid(suite, store, methods=args.method, seeds=[seed])
        else:
            options = RayOptions(local_cpus=args.cpus, cpus_per_task=args.task_cpus)
            summary = run_grid_ray(suite, store, options, methods=args.method, seeds=[seed])
        timings[name] = (time.perf_counter() - start, summary.computed, len(summary.failed))
        store.close()
        print(f"{name}: {timings[name][0]:.1f} s, {summary.computed} cells, {len(summary.failed)} failed", flush=True)

    local, ray_run = timings["local"][0], timings["ray"][0]
    print(f"\n{suite.name}, seed {seed}, {os.cpu_count()} CPUs, Ray tasks of {args.task_cpus:g} CPU on "
          f"{args.cpus} CPUs")
    print(f"{'executor':<10} {'wall s':>8} {'cells':>6} {'failed':>7}")
    for name, (seconds, cells, failed) in timings.items():
        print(f"{name:<10} {seconds:>8.1f} {cells:>6} {failed:>7}")
    print(f"ray / local: {ray_run / local:.2f}")


if __name__ == "__main__":
    main()
