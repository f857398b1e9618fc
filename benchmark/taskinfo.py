"""What a task folder declares, and the one registry of tasks (`TASKS`) everybody reads.

A task is one folder: its lm-eval YAML (`<name>.yaml`), its metric code, its data builder and this
metadata (display name, description, primary metric, the skills it needs) as `TASK = TaskInfo(...)`
in its `__init__.py`. A skill is a task whose folder can also build training data; its eval task
bears the skill's name. Folders come from three places, registered in this order: the `tasks`
package (built in), installed packages' entry points (group `soupbench.tasks`), and task dirs
(`SOUPBENCH_TASK_DIRS`, then those given to `TASKS.add_dirs`, e.g. by `--task-dir`); see
`benchmark.task_discovery`.

`TASKS` is built lazily, once per process, on its first read, so that importing this module costs
nothing and a command line can name task dirs before anything looks a task up: `TASKS.add_dirs`
after the registry was built is a programming error (a task read too early), refused loudly rather
than leaving readers with two views of the task set. The CLI adds its dirs and builds at once, so a
broken folder is refused in one line before any work.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmark.errors import UserError
from benchmark.registry import Registry, UnknownNameError, did_you_mean

# (n, seed, **options) -> documents; eval documents carry "prompt", "target" (a reference completion) and
# "answer" (the number a correct response yields); training examples carry "prompt", "completion".
Builder = Callable[[int, int], list[dict]]

TASK_DIRS_ENV_VAR = "SOUPBENCH_TASK_DIRS"  # os.pathsep-separated task dirs, read when TASKS is built
BUILT_IN = "built in"


@dataclass(frozen=True)
class TaskInfo:
    name: str
    display_name: str
    description: str
    skills: tuple[str, ...]
    primary_metric: str
    build_eval: Builder
    build_train: Builder | None = None  # only skills have training data
    folder: Path | None = None  # set on registration: the folder that holds the task's YAML
    # Where the task was registered from: "built in", "entry point <dist>:<name>" or "folder <path>".
    origin: str = BUILT_IN

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


class TaskRegistry(Registry[TaskInfo]):
    """The task registry, built on first read from the built-ins, entry points and task dirs."""

    def __init__(self) -> None:
        super().__init__("task")
        self._dirs: list[Path] = []
        self._built = False

    def add_dirs(self, dirs: Iterable[str | Path]) -> None:
        """Register task dirs (a task folder, or a folder of task folders) for the build.

        Dirs already registered are ignored; a new one after the registry was built raises
        RuntimeError: whatever read TASKS before would not see its tasks.
        """
        new = [d for d in dict.fromkeys(Path(d).expanduser().resolve() for d in dirs) if d not in self._dirs]
        if not new:
            return
        if self._built:
            raise RuntimeError(f"the task registry was built before task dirs {[str(d) for d in new]} were added: "
                               "add task dirs before anything reads TASKS")
        self._dirs.extend(new)

    def dirs(self) -> list[Path]:
        """Every task dir the registry is built from: the environment's, then the added ones."""
        from_env = [Path(p).expanduser().resolve() for p in os.environ.get(TASK_DIRS_ENV_VAR, "").split(os.pathsep)
                    if p.strip()]
        return list(dict.fromkeys(from_env + self._dirs))

    def build(self) -> None:
        """Discover every task now (a no-op once built); a broken task raises UserError and leaves
        the registry unbuilt, so every later read refuses it the same way."""
        if self._built:
            return
        from benchmark.task_discovery import discover

        try:
            for info in discover(self.dirs()):
                self.add(info.name, info)
        except BaseException:
            self._entries.clear()
            raise
        self.freeze()
        self._built = True

    def reset(self) -> None:
        """Forget every task and added dir: the next read builds the registry again (for tests, and
        for a long-lived process that must see other task dirs)."""
        self._entries.clear()
        self._dirs.clear()
        self._frozen = self._built = False

    def folders(self) -> tuple[Path, ...]:
        """The folders of every registered task: where lm-eval looks for their YAMLs."""
        return tuple(self.get(name).folder for name in self.names())

    def get(self, name: str) -> TaskInfo:
        self.build()
        return super().get(name)

    def names(self) -> list[str]:
        self.build()
        return super().names()

    def __contains__(self, name: object) -> bool:
        self.build()
        return super().__contains__(name)

    def __len__(self) -> int:
        self.build()
        return super().__len__()


TASKS = TaskRegistry()


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
