"""Planning a grid (benchmark.plan): which merged models are still missing, from the store alone."""

from __future__ import annotations

from sqlalchemy import func, select

from benchmark.plan import create_methods, plan_cells
from benchmark.storage import Run, RunRecord, Store, open_store
from benchmark.suite import Suite
from tests.conftest import TINY_SUITE

SUITE = Suite.model_validate({**TINY_SUITE, "skills": [*TINY_SUITE["skills"], {"name": "qa"}],
                              "tasks": ["math", "code", "qa", "math_code"]})


def _stored_ok(store: Store, method, task: str, seed: int) -> None:
    store.save_runs([RunRecord(
        suite=SUITE.name, method=method.display_name, method_params=method.params.model_dump(mode="json"), task=task,
        seed=seed, scores=[], samples=[], merge_seconds=0.0, eval_seconds=0.0, peak_memory_mb=0.0, output_rank=None,
        consumes=method.consumes.value, n_target_examples=None, base_fingerprint="sha256:x", expert_fingerprints={},
        provenance={}, spec={})])


def _shape(plan) -> list[tuple]:
    return [(c.label, c.seed, c.experts, c.tasks) for c in plan.cells]


def test_cells_group_the_tasks_one_merge_serves(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    methods = create_methods(SUITE, ["base", "expert-math", "ties", "lorahub"])
    plan = plan_cells(SUITE, store, methods, list(SUITE.tasks), [0, 1])
    every = ("math", "code", "qa")
    assert _shape(plan)[:5] == [
        ("base", 0, every, ("math", "code", "qa", "math_code")),  # one model whichever experts are offered
        ("expert-math", 0, every, ("math", "code", "qa", "math_code")),
        ("ties", 0, every, ("math", "code", "qa")),  # a skill's task: the merge of every expert
        ("ties", 0, ("math", "code"), ("math_code",)),  # a composite task: the merge of what it needs
        ("lorahub", 0, every, ("math",)),  # tuned on its target task: one merge per task
    ]
    assert [c.tasks for c in plan.cells if c.label == "lorahub" and c.seed == 0] == [
        ("math",), ("code",), ("qa",), ("math_code",)]
    assert _shape(plan)[len(plan.cells) // 2:] == [(l, 1, e, t) for l, _, e, t in _shape(plan)[:len(plan.cells) // 2]]
    assert plan.skipped == 0 and plan.seeds == [0, 1] and plan.tasks == set(SUITE.tasks)


def test_the_plan_holds_only_what_the_store_lacks_and_writes_nothing(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    base, ties = create_methods(SUITE, ["base", "ties"])
    _stored_ok(store, base, "math", 0)
    _stored_ok(store, ties, "math_code", 0)
    _stored_ok(store, ties, "code", 1)
    with store.engine.connect() as connection:
        before = connection.scalar(select(func.count()).select_from(Run))
    plan = plan_cells(SUITE, store, [base, ties], list(SUITE.tasks), [0, 1])
    assert _shape(plan) == [
        ("base", 0, ("math", "code", "qa"), ("code", "qa", "math_code")),
        ("ties", 0, ("math", "code", "qa"), ("math", "code", "qa")),
        ("base", 1, ("math", "code", "qa"), ("math", "code", "qa", "math_code")),
        ("ties", 1, ("math", "code", "qa"), ("math", "qa")),
        ("ties", 1, ("math", "code"), ("math_code",)),
    ]
    assert plan.skipped == 3
    with store.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Run)) == before
    other_params = create_methods(SUITE.model_copy(update={"method_params": {"ties": {"density": 0.5}}}), ["ties"])
    assert len(plan_cells(SUITE, store, other_params, list(SUITE.tasks), [0]).cells) == 2  # other params: nothing stored
