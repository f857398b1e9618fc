"""What a task folder declares, and the registry of task folders.

A task is one folder of `tasks/`: its lm-eval YAML, its metric code, its data builder and this
metadata (display name, description, primary metric, the skills it needs). A skill is a task whose
folder can also build training data; its eval task bears the skill's name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tasks as tasks_package
from benchmark.errors import UserError
from benchmark.registry import Registry, UnknownNameError, did_you_mean

# (n, seed, **options) -> documents; eval documents carry "prompt", "target" (a reference completion) and
# "answer" (the number a correct response yields); training examples carry "prompt", "completion".
Builder = Callable[[int, int], list[dict]]


@dataclass(frozen=True)
class TaskInfo:
    name: str
    display_name: str
    description: str
    skills: tuple[str, ...]
    primary_metric: str
    build_eval: Builder
    build_train: Builder | None = None  # only skills have training data
    folder: Path | None = None

    @property
    def kind(self) -> Literal["skill", "composite"]:
        return "skill" if self.build_train is not None else "composite"

    def check_options(self, options: dict) -> None:
        """Refuse builder options the task's builders do not take, naming the ones they do."""
        accepted: set[str] = set()
        for builder in (self.build_eval, self.build_train):
            if builder is not None:
                accepted |= set(list(inspect.signature(builder).parameters)[2:])
        unknown = set(options) - accepted
        if unknown:
            hint = "".join(did_you_mean(option, accepted) for option in sorted(unknown))
            raise UserError(f"task {self.name!r}: unknown builder options {sorted(unknown)};{hint} "
                            f"accepted: {sorted(accepted) or '(none)'}")

    @property
    def executes_programs(self) -> bool:
        """Whether its responses are run as programs: lm-eval's own `unsafe_code: true` in the
        task's YAML. Such a task needs the sandbox, so a run that includes it checks for one first."""
        return self.folder is not None and re.search(r"^unsafe_code:\s*true\b", self.yaml_path.read_text(),
                                                     re.MULTILINE) is not None

    @property
    def yaml_path(self) -> Path:
        assert self.folder is not None
        return self.folder / f"{self.name}.yaml"


def _discover() -> Registry[TaskInfo]:
    registry: Registry[TaskInfo] = Registry("task")
    for module in pkgutil.iter_modules(tasks_package.__path__):
        if not module.ispkg or module.name.startswith("_"):
            continue
        package = importlib.import_module(f"tasks.{module.name}")
        info = getattr(package, "TASK", None)
        if isinstance(info, TaskInfo):
            folder = Path(package.__file__).parent
            registry.add(info.name, TaskInfo(**{**info.__dict__, "folder": folder}))
    registry.freeze()
    return registry


TASKS = _discover()


def skill_names() -> list[str]:
    """The tasks that are skills (their folder builds training data), sorted."""
    return [name for name in TASKS if TASKS.get(name).kind == "skill"]


def get_skill(name: str) -> TaskInfo:
    """The task folder of skill `name`. An unknown name is refused as a skill (with the nearest
    skill and the known ones), and a composite task as what it is: it has no training data."""
    skills = skill_names()
    if name in skills:
        return TASKS.get(name)
    if name in TASKS:
        raise UserError(f"{name!r} is a composite task, not a skill: its folder builds no training data "
                        f"(skills: {', '.join(skills)})")
    raise UnknownNameError(f"unknown skill {name!r}.{did_you_mean(name, skills)} Known skills: {', '.join(skills)}.")
