"""The grid on a Ray cluster: the same plan as the local executor, its steps as Ray tasks.

`soupbench run --executor ray [--address ADDR]` plans exactly as `benchmark.runner.run_grid` does
(`prepare_plan`), then submits:

1. one task that prepares the base (from the release, the cache, or pretrained and cached);
2. one task per (seed, skill) an expert is needed for, each depending on the base task: experts
   are trained once and shared through the content-addressed cache (`SOUPBENCH_CACHE`, which on a
   cluster must be a filesystem every node mounts), never through the object store, since a 7B
   base's expert is read by many cells on many nodes;
3. one task per cell, depending on the expert tasks of its seed; a worker process keeps one `Pool`
   per suite, so the cells it computes load the base once (on a GPU each cell gets a fresh worker:
   Ray binds a GPU to a task, and a worker's CUDA context cannot move).

Every task declares its resources (CPUs, GPUs, memory). The driver holds the cells' claims in the
database (`benchmark.claims`) and stores each cell's records as soon as its task returns, so a
stopped driver loses only cells in flight. A worker that dies (killed, out of memory, a lost node)
is retried once by Ray (`max_retries=1`); a cell whose task fails again is recorded as failed and
rerun by the next `soupbench run`, and no other cell is touched. A method that raises is recorded as
failed inside the task (as the local executor does), not retried: the same code on the same inputs
raises again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark import catalog
from benchmark.claims import ClaimBook
from benchmark.errors import UserError
from benchmark.evaluation import evaluate_model
from benchmark.plan import Cell
from benchmark.pool import Pool, Reporter
from benchmark.runner import (GridSummary, check_stored_base, claim_cell, failed_record, prepare_plan, run_cell,
                              store_cell)
from benchmark.storage import RunRecord, Store, collect_provenance
from benchmark.suite import Suite
from benchmark.taskinfo import TASKS

# Environment a worker must share with the driver: the cache (on a shared filesystem), the device,
# the hub's offline switches. Passed through Ray's runtime_env, so a remote cluster gets them too.
FORWARDED_ENV_PREFIXES = ("SOUPBENCH_", "HF_")


@dataclass(frozen=True)
class RayOptions:
    """Where the cluster is and what each task reserves on it."""

    address: str | None = None  # None: start a local Ray instance for this run
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    memory_gb_per_task: float | None = None
    local_cpus: int | None = None  # CPUs of a local instance (default: all of the machine's)

    def task_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.cpus_per_task, "num_gpus": self.gpus_per_task, "max_retries": 1,
                                   "retry_exceptions": False}
        if self.memory_gb_per_task:
            options["memory"] = int(self.memory_gb_per_task * 2**30)
        return options


@dataclass(frozen=True)
class CellPayload:
    """A cell as it travels to a worker: its method by name and parameters (a method instance's
    class may come from a user's file that the worker loads itself)."""

    method: str
    params: dict
    seed: int
    experts: tuple[str, ...]
    tasks: tuple[str, ...]

    @classmethod
    def of(cls, cell: Cell) -> CellPayload:
        return cls(cell.label, cell.params, cell.seed, cell.experts, cell.tasks)

    def cell(self, suite: Suite) -> Cell:
        return Cell(catalog.create_method(self.method, self.params, suite.skill_names), self.seed, self.experts,
                    self.tasks)


@dataclass(frozen=True)
class WorkerSetup:
    """What every task rebuilds its process's state from."""

    suite: Suite
    tasks: tuple[str, ...]
    use_release: bool
    eval_seed: int | None
    method_files: tuple[str, ...]
    task_dirs: tuple[str, ...] = ()  # tasks from outside the repository (`--task-dir`), registered alike


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'soupbench[ray]'") from None
    return ray


def run_grid_ray(
    suite: Suite,
    store: Store,
    options: RayOptions,
    methods: list[str] | None = None,
    tasks: list[str] | None = None,
    seeds: list[int] | None = None,
    reporter: Reporter | None = None,
    use_release: bool = True,
    eval_seed: int | None = None,
    method_files: list[Path] | None = None,
) -> GridSummary:
    """`benchmark.runner.run_grid` on a Ray cluster; same plan, same rows (see the module's docstring)."""
    ray = import_ray()
    reporter = reporter or Reporter()
    tasks = tasks or list(suite.tasks)
    plan, summary = prepare_plan(suite, store, methods, tasks, seeds)
    if not plan.cells:
        reporter.log("every cell is already stored")
        return summary
    setup = WorkerSetup(suite, tuple(tasks), use_release, eval_seed,
                        tuple(str(Path(f).resolve()) for f in method_files or []),
                        tuple(str(d) for d in TASKS.dirs()))
    started_here = not ray.is_initialized()
    if started_here:
        _init(ray, options)
    try:
        remote = _remote_functions(ray, options)
        base_ref = remote["base"].remote(setup)
        fingerprint = ray.get(base_ref)
        reporter.log(f"base model ready on the cluster ({fingerprint})")
        check_stored_base(suite, store, fingerprint)
        expert_refs = {(seed, skill): remote["expert"].remote(setup, seed, skill, base_ref)
                       for seed in plan.seeds for skill in _skills_needed(plan, seed)}
        with ClaimBook(store) as claims:
            in_flight: dict[Any, Cell] = {}
            for cell in plan.cells:
                held = claim_cell(claims, suite, cell, summary, reporter)
                if not held:
                    continue
                cell = cell.with_tasks(held)
                needs = [ref for (seed, skill), ref in expert_refs.items() if seed == cell.seed and skill in cell.experts]
                in_flight[remote["cell"].remote(setup, CellPayload.of(cell), *needs)] = cell
            reporter.log(f"{len(in_flight)} cells submitted to the cluster")
            while in_flight:
                (ref,), _ = ray.wait(list(in_flight), num_returns=1)
                cell = in_flight.pop(ref)
                store_cell(store, claims.owner, _records_of(ray, ref, suite, cell), summary, reporter)
    finally:
        if started_here:
            ray.shutdown()
    return summary


def _init(ray, options: RayOptions) -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
    try:
        if options.address:
            ray.init(address=options.address, runtime_env={"env_vars": env}, log_to_driver=True)
        else:
            ray.init(num_cpus=options.local_cpus, include_dashboard=False, runtime_env={"env_vars": env},
                     log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = options.address or "a local instance"
        raise UserError(f"--executor ray: cannot start or reach the Ray cluster ({where}): {err}") from None


def _skills_needed(plan, seed: int) -> list[str]:
    return list(dict.fromkeys(skill for cell in plan.cells if cell.seed == seed for skill in cell.experts))


def _records_of(ray, ref, suite: Suite, cell: Cell) -> list[RunRecord]:
    """The records a cell task returned, or failed records when its task (or a task it depends on)
    failed twice: a worker killed, out of memory, a node lost."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        return [failed_record(suite, cell, task, f"the Ray task failed twice ({message})", str(err),
                               collect_provenance()) for task in cell.tasks]


def _remote_functions(ray, options: RayOptions) -> dict[str, Any]:
    """The three task kinds, with the run's resources. On a GPU a cell task runs in a fresh worker
    each time (Ray's own default for GPU functions); on CPUs workers are reused with their pool."""
    task_options = options.task_options()
    reuse = 1 if options.gpus_per_task > 0 else 0
    return {
        "base": ray.remote(max_calls=reuse)(_prepare_base_task).options(**task_options),
        "expert": ray.remote(max_calls=reuse)(_prepare_expert_task).options(**task_options),
        "cell": ray.remote(max_calls=reuse)(_cell_task).options(**task_options),
    }


# ------------------------------------------------------------------------------------ on workers

_POOLS: dict[tuple, Pool] = {}


def _worker_reporter() -> Reporter:
    return Reporter(log=lambda message: print(message, flush=True))


def _worker_pool(setup: WorkerSetup) -> Pool:
    """This worker process's pool for the run's suite (opened on its first task, then reused)."""
    TASKS.add_dirs(setup.task_dirs)
    for path in setup.method_files:
        catalog.load_method_file(path)
    key = (setup.suite.fingerprint(), setup.tasks, setup.use_release, setup.eval_seed)
    if key not in _POOLS:
        _POOLS.clear()  # one suite's base at a time in a worker
        _POOLS[key] = Pool.open(setup.suite, list(setup.tasks), _worker_reporter(), setup.use_release,
                                setup.eval_seed)
    return _POOLS[key]


def _prepare_base_task(setup: WorkerSetup) -> str:
    return _worker_pool(setup).base.fingerprint


def _prepare_expert_task(setup: WorkerSetup, seed: int, skill: str, _base_ready: str) -> str:
    from benchmark.experts import prepare_experts

    pool = _worker_pool(setup)
    (expert,) = prepare_experts(pool.suite, pool.base, seed, pool.skill_data, None, pool.reporter.log,
                                pool.use_release, skills=(skill,))
    return expert.fingerprint


def _cell_task(setup: WorkerSetup, payload: CellPayload, *_experts_ready: str,
               evaluator: Callable[..., dict] = evaluate_model) -> list[RunRecord]:
    pool = _worker_pool(setup)
    return run_cell(payload.cell(pool.suite), pool, evaluator)
