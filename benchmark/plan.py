"""What a grid still has to compute: its cells, from the suite, the command line and the store.

A cell is one merged model: a method with its parameters, a seed, the experts it merges and the
tasks scored on that merge in one evaluation pass. A stored row is one (method, params, task,
seed); a cell covers every task of its row group still missing, so the tasks one merge serves are
evaluated together. Planning only reads the store: the local and the Ray executor run the same
plan, and a test can look at a plan without computing anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmark import catalog
from benchmark.method import Consumes, MergeMethod
from benchmark.storage import Store, params_key
from benchmark.suite import Suite
from benchmark.taskinfo import TASKS


@dataclass(frozen=True, eq=False)
class Cell:
    """One merged model to compute and the tasks scored on it."""

    method: MergeMethod
    seed: int
    experts: tuple[str, ...]  # the skills whose experts are merged
    tasks: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.method.display_name

    @property
    def params(self) -> dict:
        return self.method.params.model_dump(mode="json")

    @property
    def params_key(self) -> str:
        return params_key(self.params)

    def key(self) -> tuple:
        """What identifies the cell across processes (a method instance does not)."""
        return (self.label, self.params_key, self.seed, self.experts, self.tasks)

    def with_tasks(self, tasks: Sequence[str]) -> Cell:
        return Cell(self.method, self.seed, self.experts, tuple(tasks))


@dataclass
class Plan:
    cells: list[Cell] = field(default_factory=list)
    skipped: int = 0  # (method, task, seed) rows already stored, hence not planned

    @property
    def tasks(self) -> set[str]:
        return {task for cell in self.cells for task in cell.tasks}

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(cell.seed for cell in self.cells))


def create_methods(suite: Suite, names: Sequence[str]) -> list[MergeMethod]:
    """Each method of `names` with the suite's parameters for it, created once (a bad parameter or
    an unknown name is refused here, before any work)."""
    return [catalog.create_method(name, suite.method_params.get(name, {}), suite.skill_names) for name in names]


def plan_cells(suite: Suite, store: Store, methods: Sequence[MergeMethod], tasks: Sequence[str],
               seeds: Sequence[int]) -> Plan:
    """The cells of (methods x tasks x seeds) not stored as ok in `store`, grouped into merged models.

    A method tuned on its target task merges once per task; the base and single experts give one
    model for every task; any other method merges once per expert group (`expert_group`)."""
    plan = Plan()
    for seed in seeds:
        for method in methods:
            done = store.completed_cells(suite.name, method.display_name, params_key(_params(method)), seed)
            pending = [t for t in tasks if t not in done]
            plan.skipped += len(tasks) - len(pending)
            if not pending:
                continue
            if method.consumes is Consumes.TARGET_EXAMPLES:
                plan.cells.extend(Cell(method, seed, expert_group(suite, task), (task,)) for task in pending)
            elif method.display_name == "base" or method.display_name.startswith(catalog.EXPERT_PREFIX):
                plan.cells.append(Cell(method, seed, tuple(suite.skill_names), tuple(pending)))
            else:
                groups: dict[tuple[str, ...], list[str]] = {}
                for task in pending:
                    groups.setdefault(expert_group(suite, task), []).append(task)
                plan.cells.extend(Cell(method, seed, group, tuple(group_tasks)) for group, group_tasks in groups.items())
    return plan


def expert_group(suite: Suite, task: str) -> tuple[str, ...]:
    """The skills whose experts a method merges for `task`, in the suite's order.

    A task that needs several skills is scored on the merge of exactly those experts, as in LoRA
    Soups (math + code for GSM-Hard, knowledge + QA for the QABot; three for a task that needs
    three): an expert the task does not need is not in its soup. A skill's own task is scored on the
    merge of every expert of the suite, so that it measures what the whole soup keeps of the skill.
    With two skills and one composite task the two are the same merge."""
    info = TASKS.get(task)
    needed = set(info.skills) if info.kind == "composite" else set(suite.skill_names)
    return tuple(s for s in suite.skill_names if s in needed)


def _params(method: MergeMethod) -> dict:
    return method.params.model_dump(mode="json")
