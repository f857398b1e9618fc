"""The grid on a real local Ray cluster (2 CPUs) into PostgreSQL: the same rows as the local
executor, and a worker killed in the middle of a cell loses that cell only."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import ray

from benchmark import catalog
from benchmark.plan import plan_cells
from benchmark.ray_executor import RayOptions, run_grid_ray
from benchmark.results import open_readonly
from benchmark.runner import check_names, run_grid
from benchmark.storage import open_store
from benchmark.suite import Suite
from tests.conftest import TINY_SUITE


pytestmark = pytest.mark.slow
SUITE = Suite.model_validate(TINY_SUITE)
METHODS = ["base", "expert-code", "task_arithmetic", "dare_ties"]
LOCAL_RAY = RayOptions(local_cpus=2)

KILLER = textwrap.dedent('''
    """Task arithmetic whose worker process dies (SIGKILL, as the out-of-memory killer kills) while
    its marker file exists."""
    import os
    import signal
    from pathlib import Path

    from benchmark.method import Consumes, MethodParams, ModuleWiseMethod
    from methods._ops import weighted_sum


    class Killer(ModuleWiseMethod):
        class Params(MethodParams):
            marker: str = ""

        name = "killer"
        description = "task arithmetic, unless its marker file exists: then its process is killed"
        family = "linear"
        consumes = Consumes.NOTHING

        def merge(self, experts, context):
            if self.params.marker and Path(self.params.marker).exists():
                os.kill(os.getpid(), signal.SIGKILL)
            return super().merge(experts, context)

        def merge_module(self, deltas, generator):
            return weighted_sum(deltas, [1.0] * len(deltas))
''')


def _rows(url: str) -> dict[tuple, tuple]:
    """Every ok row by (method, params, task, seed): its scores and its per-sample outputs."""
    reader = open_readonly(url)
    try:
        rows = {}
        for run in reader.runs(suite=SUITE.name, status="ok"):
            scores = sorted((s.metric, s.value, s.stderr) for s in run.scores)
            samples = [(s.doc_index, s.prompt, s.generation, s.target, s.executed, s.correct)
                       for s in reader.samples(run.id)]
            rows[(run.method, run.params_key, run.task, run.seed)] = (scores, samples)
        return rows
    finally:
        reader.close()


def test_the_ray_executor_stores_the_rows_the_local_executor_stores(tmp_path: Path, pg_url: str) -> None:
    local_url = f"sqlite:///{tmp_path / 'local.db'}"
    local = run_grid(SUITE, open_store(local_url), methods=METHODS, seeds=[0, 1])
    assert local.computed == len(METHODS) * 3 * 2 and not local.failed

    on_ray = run_grid_ray(SUITE, open_store(pg_url), LOCAL_RAY, methods=METHODS, seeds=[0, 1])
    assert on_ray.computed == local.computed and not on_ray.failed, on_ray.failed
    assert not ray.is_initialized()  # the instance it started for the run is shut down
    local_rows, ray_rows = _rows(local_url), _rows(pg_url)
    assert len(ray_rows) == local.computed
    assert ray_rows.keys() == local_rows.keys()
    for key, (scores, samples) in local_rows.items():
        assert ray_rows[key][0] == scores, key
        assert ray_rows[key][1] == samples and samples, key

    again = run_grid_ray(SUITE, open_store(pg_url), LOCAL_RAY, methods=METHODS, seeds=[0, 1])
    assert again.computed == 0 and again.skipped == local.computed  # planned from the store: nothing left


def test_a_killed_worker_loses_only_its_cell_and_a_rerun_completes_it(tmp_path: Path, pg_url: str) -> None:
    method_file = tmp_path / "killer.py"
    method_file.write_text(KILLER)
    catalog.load_method_file(method_file)
    marker = tmp_path / "kill-while-this-exists"
    marker.write_text("")
    suite = SUITE.model_copy(update={"method_params": {**SUITE.method_params, "killer": {"marker": str(marker)}}})
    methods = ["base", "killer", "task_arithmetic"]
    store = open_store(pg_url)

    first = run_grid_ray(suite, store, LOCAL_RAY, methods=methods, seeds=[0], method_files=[method_file])
    # killer merges once per expert group: (math, code) for math and code, the same for math_code.
    assert [(label, seed) for label, seed, _ in first.failed] == [("killer", 0)]
    assert "the Ray task failed twice" in first.failed[0][2]
    assert first.computed == 6  # base and task_arithmetic on every task, untouched by the kill
    reader = open_readonly(pg_url)
    failed = reader.runs(suite=suite.name, method="killer", status="failed")
    assert {r.task for r in failed} == {"math", "code", "math_code"}
    assert {r.method for r in reader.runs(suite=suite.name, status="ok")} == {"base", "task_arithmetic"}
    reader.close()

    marker.unlink()
    plan = plan_cells(suite, store, check_names(suite, methods), list(suite.tasks), [0])
    assert [(c.label, c.tasks) for c in plan.cells] == [("killer", ("math", "code", "math_code"))]
    rerun = run_grid_ray(suite, store, LOCAL_RAY, methods=methods, seeds=[0], method_files=[method_file])
    assert rerun.computed == 3 and not rerun.failed and rerun.skipped == 6
    reader = open_readonly(pg_url)
    assert {r.task for r in reader.runs(suite=suite.name, method="killer", status="ok")} == {"math", "code", "math_code"}
    reader.close()
