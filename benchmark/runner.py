"""The runner: plans a grid's missing cells, computes each on the pool, stores every finished one.

A cell (`benchmark.plan.Cell`) is one merged model: a method with its parameters, a seed, the
experts it merges and the tasks scored on it. `run_grid` is the local executor: one loop over the
plan, each cell claimed, computed by `run_cell` on the `Pool` (base, experts, data) and stored in
one transaction, so a crash halfway through a grid loses at most the model in flight and never
leaves a half-written cell. `benchmark.ray_executor` runs the same plan on a Ray cluster. A method
that fails is recorded as failed (retried on the next run) and the grid goes on. Runners sharing a
database claim each model's cells before computing them (`benchmark.claims`): a cell another
runner stored or is computing is skipped.
"""

from __future__ import annotations

import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from benchmark import cache, catalog, merge_cache, release, sandbox
from benchmark.apply import apply_deltas
from benchmark.claims import ClaimBook
from benchmark.contract import check_merge_result
from benchmark.errors import UserError
from benchmark.evaluation import evaluate_model, require_backend
from benchmark.keys import trained_merge_key
from benchmark.hub_access import check_reachable
from benchmark.memory import PeakMemory
from benchmark.method import Consumes, MergeContext, MergeMethod
from benchmark.plan import Cell, Plan, create_methods, expert_group, plan_cells
from benchmark.pool import Pool, Reporter, task_data_dir
from benchmark.registry import did_you_mean
from benchmark.run_spec import MethodCard, RunSpec, method_source_sha256
from benchmark.skill_data import LOADERS
from benchmark.storage import RunRecord, Store
from benchmark.suite import Suite
from benchmark.taskinfo import TASKS, get_skill
from benchmark.training import Trainer

__all__ = ["GridSummary", "Reporter", "Pool", "Cell", "run_grid", "run_cell", "prepare_plan", "check_names",
           "expert_group", "task_data_dir", "rerun_spec", "store_cell", "claim_cell", "failed_record"]


DEV_EXAMPLES = 32  # target examples offered to methods that consume them (they record how many they use)
DEV_SEED_OFFSET = 10_007


@dataclass
class GridSummary:
    computed: int = 0
    skipped: int = 0  # already stored (before the run, or by another runner during it)
    elsewhere: int = 0  # being computed by another runner sharing the database: left to it
    failed: list[tuple[str, int, str]] = field(default_factory=list)  # (method, seed, error)


def check_names(suite: Suite, methods: list[str] | None = None, tasks: list[str] | None = None) -> list[MergeMethod]:
    """Every name the suite and the command line use (default: all of the suite's methods and
    tasks), refused with the nearest known name before any work: a typo must not cost a
    pretraining, nor silently run the defaults. The CLI calls it before it opens the database.
    Returns the methods, created (each once) with the suite's parameters."""
    methods = methods or catalog.method_names(suite.skill_names)
    tasks = tasks or list(suite.tasks)
    for skill in suite.skill_names:
        try:
            get_skill(skill)
            if suite.skill(skill).source == "files":
                LOADERS.get(str(suite.skill(skill).loader))  # a named data set format
        except UserError as err:
            raise UserError(f"suite {suite.name!r}: {err}") from None
    for task in tasks:
        info = TASKS.get(task)  # raises with the known names
        if task not in suite.tasks:
            raise UserError(f"task {task!r} is not in suite {suite.name!r} (its tasks: {', '.join(suite.tasks)})")
        missing = [s for s in info.skills if s not in suite.skill_names]
        if missing:
            raise UserError(f"task {task!r} needs skills {missing} that suite {suite.name!r} lacks")
    for task, options in suite.task_options.items():
        TASKS.get(task).check_options(options)
    created = create_methods(suite, methods)
    check_method_params(suite, skip=set(methods))
    return created


def check_method_params(suite: Suite, skip: set[str] = frozenset()) -> None:
    """Each key of the suite's `method_params` names a method of this suite, and its parameters are
    valid: `tiess: {density: 0.2}` would otherwise be ignored and `ties` run with its defaults.
    Methods of `skip` were just created with their parameters (`check_names`)."""
    known = catalog.method_names(suite.skill_names)
    for name, params in suite.method_params.items():
        if name in skip:
            continue
        if name not in known:
            raise UserError(f"suite {suite.name!r}: method_params names unknown method {name!r}."
                            f"{did_you_mean(name, known)} Methods of this suite: {', '.join(known)}.")
        try:
            catalog.create_method(name, params, suite.skill_names)
        except UserError as err:
            raise UserError(f"suite {suite.name!r}: method_params: {err}") from None


class RecipeChangedError(UserError):
    """The database holds cells of a suite of the same name made with another recipe."""


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        items: dict[str, object] = {}
        for key in value:
            items.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return items
    return {prefix: value}


def check_stored_recipe(suite: Suite, store: Store) -> None:
    """Refuse to add cells to a suite name whose stored cells came from another recipe.

    Cells are found by suite name, so an edited suite file (a bigger base, other task options)
    rerun into the same database would skip every stored cell and mix two designs in one table.
    """
    stored = store.stored_suite(suite.name)
    if stored is None:
        return
    stored_spec = stored[0]
    advice = ("Results of different recipes must not share a suite name: use another --db, or give "
              "the changed suite another name.")
    try:
        old = Suite.model_validate(stored_spec).recipe()
    except (ValueError, TypeError) as err:
        raise RecipeChangedError(f"suite {suite.name!r} in {store.url} was stored by an incompatible "
                                 f"version ({err}). {advice}") from None
    old_fields, new_fields = _flatten(old), _flatten(suite.recipe())
    changed = sorted(k for k in old_fields.keys() | new_fields.keys() if old_fields.get(k) != new_fields.get(k))
    if changed:
        shown = "; ".join(f"{k}: {old_fields.get(k)!r} -> {new_fields.get(k)!r}" for k in changed[:8])
        more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
        raise RecipeChangedError(f"suite {suite.name!r} in {store.url} was run with another recipe: "
                                 f"{shown}{more}. {advice}")


def check_stored_base(suite: Suite, store: Store, fingerprint: str) -> None:
    """Refuse to add cells made on another base than the one the stored cells of `suite` name.

    Bases are named by the hash of their weights: the same recipe built with other library
    releases or on another device kind gives other weights, and rows of two bases are not
    comparable. Checked once the base is loaded (a released or cached base), before any cell.
    """
    stored = store.stored_suite(suite.name)
    if stored is not None and stored[1] and stored[1] != fingerprint:
        raise RecipeChangedError(
            f"suite {suite.name!r} in {store.url} was run on base {stored[1]}, this run has base {fingerprint} "
            "(a base built here rather than the released one, or built on another device kind or with other "
            "library versions, has other weights). Results of different bases must not share a suite name: "
            "use another --db, or give the suite another name.")


def run_grid(
    suite: Suite,
    store: Store,
    methods: list[str] | None = None,
    tasks: list[str] | None = None,
    seeds: list[int] | None = None,
    reporter: Reporter | None = None,
    evaluator: Callable[..., dict] = evaluate_model,
    use_release: bool = True,
    eval_seed: int | None = None,
) -> GridSummary:
    """Run every (method, task, seed) cell not yet stored, here; return what was done.

    `evaluator` has `benchmark.evaluation.evaluate_model`'s signature; replacing it is for research
    scripts on machines without lm-eval (scripts/micro_sweep.py), not for leaderboard results.
    `use_release=False` builds (or takes from the cache) instead of using the release: what the
    release command does. `eval_seed` scores on documents drawn from another seed than the suite's
    `data_seed` (a hidden set, `benchmark.submission`); base, experts and training data are unchanged.
    """
    reporter = reporter or Reporter()
    tasks = tasks or list(suite.tasks)
    plan, summary = prepare_plan(suite, store, methods, tasks, seeds, evaluator)
    if not plan.cells:
        reporter.log("every cell is already stored")
        return summary
    pool = Pool.open(suite, tasks, reporter, use_release, eval_seed)
    check_stored_base(suite, store, pool.base.fingerprint)
    grid_bar = reporter.progress("merge + evaluate") if reporter.progress else None
    if grid_bar is not None:
        grid_bar(0, len(plan.cells), float("nan"))
    with ClaimBook(store) as claims:
        for done, cell in enumerate(plan.cells, start=1):
            held = claim_cell(claims, suite, cell, summary, reporter)
            if held:
                cell = cell.with_tasks(held)
                merged = "" if len(cell.experts) == len(suite.skill_names) else f" the {' + '.join(cell.experts)} experts"
                reporter.log(f"{cell.label} (seed {cell.seed}): merging{merged}, then evaluating {', '.join(cell.tasks)}")
                store_cell(store, claims.owner, run_cell(cell, pool, evaluator), summary, reporter)
            if grid_bar is not None:
                grid_bar(done, len(plan.cells), float("nan"))
    return summary


def prepare_plan(suite: Suite, store: Store, methods: list[str] | None, tasks: list[str], seeds: list[int] | None,
                 evaluator: Callable[..., dict] = evaluate_model) -> tuple[Plan, GridSummary]:
    """Names checked, the stored recipe checked, the plan made, and the sandbox required when a
    planned task runs programs: every refusal comes before the base is loaded or built."""
    names = methods or catalog.method_names(suite.skill_names)
    seeds = seeds if seeds is not None else list(suite.seeds[:1])
    created = check_names(suite, names, tasks)
    check_reachable(suite, tasks)  # a model or data set it cannot fetch: one line now, not a traceback later
    check_stored_recipe(suite, store)
    plan = plan_cells(suite, store, created, tasks, seeds)
    if plan.cells and evaluator is evaluate_model:
        require_backend(suite.eval)  # refused now, in one line, not after the base and experts are built
        if any(TASKS.get(task).executes_programs for task in plan.tasks):
            sandbox.require_isolation()
    return plan, GridSummary(skipped=plan.skipped)


def store_cell(store: Store, owner: str, records: list[RunRecord], summary: GridSummary,
               reporter: Reporter) -> list[RunRecord]:
    """Store one computed cell's records (ok or failed), count and report them; return those kept."""
    if records and records[0].status == "failed":
        reporter.log(f"[red]{records[0].method} failed[/red] (seed {records[0].seed}): {records[0].error}")
        summary.failed.append((records[0].method, records[0].seed, records[0].error or ""))
    records = _save(store, owner, records, summary, reporter)
    reporter.stored(records)
    if records and records[0].status == "ok":
        reporter.log(f"{records[0].method} (seed {records[0].seed}): merge {records[0].merge_seconds:.1f} s, "
                     f"eval {records[0].eval_seconds * len(records):.1f} s, "
                     + ", ".join(f"{r.task} {_primary(r):.3f}" for r in records))
    summary.computed += sum(r.status == "ok" for r in records)
    return records


def rerun_spec(spec: RunSpec, store: Store, reporter: Reporter | None = None,
               evaluator: Callable[..., dict] = evaluate_model, eval_seed: int | None = None) -> GridSummary:
    """Recompute, into `store`, the cell a stored row's spec describes, from the spec alone.

    The whole merged model of the row is recomputed: every task of `spec.tasks` (scored on one merge
    in one evaluation pass, as the original run did, so that the documents are batched alike). The
    method must be registered under the spec's name (built in, a plugin, or a loaded file); when the
    spec names its source's sha256, the registered code must be that code.
    """
    cls = catalog.get_method_class(spec.method)
    if spec.card is not None and spec.card.source_sha256:
        found = method_source_sha256(cls)
        if found != spec.card.source_sha256:
            raise UserError(f"method {spec.method!r} is registered here with other code than the row was made with "
                            f"(its source has sha256 {found}, the row names {spec.card.source_sha256})")
    suite = spec.suite
    current = _params(catalog.create_method(spec.method, suite.method_params.get(spec.method, {}), suite.skill_names))
    if current != spec.params:
        suite = suite.model_copy(update={"method_params": {**suite.method_params, spec.method: spec.params}})
    return run_grid(suite, store, methods=[spec.method], tasks=list(spec.tasks or (spec.task,)), seeds=[spec.seed],
                    reporter=reporter, evaluator=evaluator, eval_seed=eval_seed)


def claim_cell(claims: ClaimBook, suite: Suite, cell: Cell, summary: GridSummary, reporter: Reporter) -> list[str]:
    """The tasks of `cell` this runner computes: those that no other runner sharing the database
    has stored since the plan was made, nor is computing now (see `benchmark.claims`)."""
    outcome = claims.claim(suite.name, cell.label, cell.params_key, cell.seed, list(cell.tasks))
    summary.skipped += len(outcome.stored)
    summary.elsewhere += len(outcome.busy)
    if outcome.stored:
        reporter.log(f"{cell.label} (seed {cell.seed}): {', '.join(outcome.stored)} stored meanwhile by another runner")
    for task, who in outcome.busy.items():
        reporter.log(f"{cell.label} (seed {cell.seed}): {task} is being computed by another runner ({who}): left to it")
    return outcome.held


def _save(store: Store, owner: str, records: list[RunRecord], summary: GridSummary,
          reporter: Reporter) -> list[RunRecord]:
    """Store one merged model's records, releasing their claims; return those kept. A cell another
    runner stored meanwhile (its claim was taken over from us) is left out, not an error."""
    left_out = {id(r) for r in store.save_runs(records, owner=owner, if_stored="skip")}
    if left_out:
        tasks = ", ".join(r.task for r in records if id(r) in left_out)
        reporter.log(f"{records[0].method} (seed {records[0].seed}): {tasks} stored meanwhile by another runner; "
                     "this runner's result was not kept")
        summary.skipped += len(left_out)
    return [r for r in records if id(r) not in left_out]


def _primary(record: RunRecord) -> float:
    return next((s.value for s in record.scores if s.primary), float("nan"))


def _params(method: MergeMethod) -> dict:
    return method.params.model_dump(mode="json")


def _label(method: MergeMethod) -> str:
    return method.display_name


def _class_path(method: MergeMethod) -> str:
    return f"{type(method).__module__}.{type(method).__qualname__}"


def _dev_examples(suite: Suite, task: str, n: int = DEV_EXAMPLES) -> list[dict]:
    """Examples of a target task drawn from another stream than its scored documents."""
    return TASKS.get(task).build_eval(n, suite.data_seed + DEV_SEED_OFFSET, **suite.task_options.get(task, {}))


def run_cell(cell: Cell, pool: Pool, evaluator: Callable[..., dict] = evaluate_model) -> list[RunRecord]:
    """Merge the cell's experts with its method, evaluate every task of the cell on the merge, and
    return one record per task. A method that raises gives failed records (with the traceback) and
    the grid goes on; the experts are prepared first, outside that net: a failure to train them is
    not the method's."""
    experts = pool.experts(cell.seed, cell.experts)
    try:
        return _compute(cell, pool, experts, evaluator)
    except Exception as err:  # a broken method must not stop the grid
        message = f"{type(err).__name__}: {err}"
        return [failed_record(pool.suite, cell, task, message, traceback.format_exc(), pool.provenance)
                for task in cell.tasks]


def _compute(cell: Cell, pool: Pool, experts, evaluator: Callable[..., dict]) -> list[RunRecord]:
    suite, base, method, seed, pending = pool.suite, pool.base, cell.method, cell.seed, list(cell.tasks)
    wants_data = method.consumes in (Consumes.SKILL_SAMPLE, Consumes.SKILL_DATA)
    wants_target = method.consumes is Consumes.TARGET_EXAMPLES
    context = MergeContext(
        seed=seed,
        skills=[e.name for e in experts],
        skill_data={k: v for k, v in pool.skill_data.items() if k in cell.experts} if wants_data else {},
        target_task=pending[0] if wants_target else None,
        target_examples=_dev_examples(suite, pending[0]) if wants_target else [],
        load_base=base.fresh,
        tokenizer=base.tokenizer,
        trainer=Trainer(base.tokenizer, suite.expert, pool.reporter.progress),
        device=str(base.model.device),
        report=pool.reporter.log,
    )
    torch.manual_seed(seed)
    cached_cost = None
    with PeakMemory() as memory:
        start = time.perf_counter()
        if method.cache_result:
            result, cached_cost = _cached_merge(pool, experts, method, context, seed, memory, start)
        else:
            result = method.merge(experts, context)
        result = check_merge_result(method, result, base.model)
        model = base.fresh()
        stats = apply_deltas(model, result)
        merge_seconds = time.perf_counter() - start
        start = time.perf_counter()
        outcomes = evaluator(model, base.tokenizer, pending, pool.data_dir, suite.eval)
        eval_seconds = time.perf_counter() - start
    peak_mb = memory.peak_mb
    provenance = pool.provenance
    if cached_cost is not None:
        provenance = {**provenance, "merge_result": cached_cost}
        if cached_cost["reused"]:  # the method's cost is what computing it cost, plus reading it
            merge_seconds += cached_cost["merge_seconds"]
            peak_mb = max(peak_mb, cached_cost["peak_memory_mb"])
    spec = _spec(suite, cell, pending[0])
    info = dict(result.info)  # a learned method's weights (CAT's per module) too: the method page shows them
    return [
        RunRecord(
            suite=suite.name, method=cell.label, method_params=cell.params, task=task, seed=seed,
            scores=outcomes[task].scores, samples=outcomes[task].samples,
            merge_seconds=merge_seconds, eval_seconds=eval_seconds / len(pending),
            peak_memory_mb=peak_mb, output_rank=result.output_rank or stats.get("max_output_rank"),
            consumes=method.consumes.value, n_target_examples=info.get("n_target_examples"),
            base_fingerprint=base.fingerprint, expert_fingerprints={e.name: e.fingerprint for e in experts},
            provenance={**provenance, "method_info": info},
            spec=spec.model_copy(update={"task": task}).stored(),
        )
        for task in pending
    ]


def _spec(suite: Suite, cell: Cell, task: str) -> RunSpec:
    return RunSpec(suite=suite, method=cell.label, method_class=_class_path(cell.method), params=cell.params,
                   seed=cell.seed, task=task, tasks=cell.tasks, experts=cell.experts, card=MethodCard.of(cell.method))


def _cached_merge(pool: Pool, experts, method: MergeMethod, context: MergeContext, seed: int,
                  memory: PeakMemory, start: float):
    """A trained method's result from the release or the cache (with the cost it had), or
    computed now and cached; returns (result, {key, reused, cost when computed})."""
    key = trained_merge_key(pool.suite, method, seed, pool.base.fingerprint, [e.fingerprint for e in experts],
                            context.skill_data, context.target_task, context.target_examples)
    released = release.released_merge(key) if pool.use_release else None  # its files checked by the release
    folder = released or cache.cache_dir("merges", key)
    if released is not None or cache.usable(folder, f"{_label(method)} (seed {seed}): its trained result",
                                            context.report):
        result, cost = merge_cache.load(folder)
        context.report(f"{_label(method)} (seed {seed}): its trained result comes from {folder} "
                       f"(computed in {cost['merge_seconds']:.1f} s on {cost['hostname']})")
        return result, {**cost, "key": key, "reused": True}
    result = method.merge(experts, context)
    cost = {"merge_seconds": round(time.perf_counter() - start, 3), "peak_memory_mb": round(memory.so_far_mb(), 1),
            "hostname": socket.gethostname(), "device": str(pool.base.model.device)}
    return merge_cache.save(folder, result, cost), {**cost, "key": key, "reused": False}


def failed_record(suite: Suite, cell: Cell, task: str, message: str, trace: str, provenance: dict) -> RunRecord:
    """The record of a cell's task whose computation failed: stored as failed, computed again by the next run."""
    return RunRecord(
        suite=suite.name, method=cell.label, method_params=cell.params, task=task, seed=cell.seed,
        scores=[], samples=[], merge_seconds=0.0, eval_seconds=0.0, peak_memory_mb=0.0, output_rank=None,
        consumes=cell.method.consumes.value, n_target_examples=None, base_fingerprint="", expert_fingerprints={},
        provenance={**provenance, "traceback": trace}, spec=_spec(suite, cell, task).stored(),
        status="failed", error=message,
    )
