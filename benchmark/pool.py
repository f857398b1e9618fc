"""The pool a grid's cells draw from: the base, the experts of each seed, the skills' training
data, the tasks' eval documents and the provenance of the process.

Built once per runner (the local executor) or once per worker process (the Ray executor), and
shared by every cell it computes: loading the base and the experts costs more than a cheap merge,
so a cell never loads them itself. Experts are prepared per seed on first use (from the release,
the cache, or trained and cached), so a runner whose cells of a seed were all taken by another
runner never trains them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmark import cache
from benchmark.base_model import BaseModel, prepare_base
from benchmark.evaluation import write_task_data
from benchmark.experts import prepare_experts, skill_training_data
from benchmark.keys import task_data_key
from benchmark.lora import Expert
from benchmark.storage import RunRecord, collect_provenance
from benchmark.suite import Suite
from benchmark.taskinfo import TASKS
from benchmark.training import Progress


@dataclass
class Reporter:
    """How the runner talks to a user; the CLI plugs in rich progress bars, tests plug in nothing."""

    progress: Callable[[str], Progress] | None = None
    log: Callable[[str], None] = lambda message: None
    # Called with each merged model's records once they are stored (the CLI's live table).
    stored: Callable[[list[RunRecord]], None] = lambda records: None


@dataclass
class Pool:
    """Everything a cell needs besides its method: see the module's docstring."""

    suite: Suite
    base: BaseModel
    skill_data: dict[str, list[dict]]
    data_dir: Path
    provenance: dict
    reporter: Reporter = field(default_factory=Reporter)
    use_release: bool = True
    _experts: dict[int, list[Expert]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, suite: Suite, tasks: list[str], reporter: Reporter | None = None, use_release: bool = True,
             eval_seed: int | None = None) -> Pool:
        """Load (or build) the suite's base and write the eval documents of `tasks`."""
        reporter = reporter or Reporter()
        start = time.perf_counter()
        base = prepare_base(suite, reporter.progress("pretraining base") if reporter.progress else None,
                            log=reporter.log, use_release=use_release)
        reporter.log(f"base model ready in {time.perf_counter() - start:.1f} s ({base.fingerprint})")
        return cls(suite=suite, base=base, skill_data=skill_training_data(suite),
                   data_dir=task_data_dir(suite, tasks, eval_seed), provenance=collect_provenance(),
                   reporter=reporter, use_release=use_release)

    def experts(self, seed: int, skills: tuple[str, ...] | None = None) -> list[Expert]:
        """The experts of `seed` (every skill of the suite, prepared once), or those of `skills`."""
        if seed not in self._experts:
            start = time.perf_counter()
            self._experts[seed] = prepare_experts(self.suite, self.base, seed, self.skill_data,
                                                  self.reporter.progress, self.reporter.log, self.use_release)
            self.reporter.log(f"experts for seed {seed} ready in {time.perf_counter() - start:.1f} s")
        return [e for e in self._experts[seed] if skills is None or e.name in skills]


def task_data_dir(suite: Suite, tasks: list[str], eval_seed: int | None = None) -> Path:
    """The folder of the suite's eval documents of `tasks` (written now if missing): drawn from the
    suite's `data_seed`, or from `eval_seed` for a hidden set."""
    seed = suite.data_seed if eval_seed is None else eval_seed
    data_dir = cache.cache_dir("data", task_data_key(suite, seed))
    for task in tasks:
        write_task_data([task], data_dir, eval_size(suite, task), seed, suite.task_options)
    return data_dir


def eval_size(suite: Suite, task: str) -> int:
    """A task's number of eval documents: the largest eval size of the skills it needs."""
    sizes = [s.eval_size for s in suite.skills if s.name in TASKS.get(task).skills]
    return max(sizes) if sizes else 200
