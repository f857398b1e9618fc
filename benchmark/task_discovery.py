"""Where tasks come from: the `tasks` package, installed entry points and task dirs, in that order.

`discover` returns every task once, each with its `folder` (where lm-eval finds its YAML) and its
`origin`; `benchmark.taskinfo.TASKS` calls it once per process. A name registered twice is refused
naming both origins, so an outside task can never silently replace a built-in one.

Outside code is imported contained: a task folder becomes a package under a name of its own
(`soupbench_task_<hash>_<folder>`, from the folder's path), never by putting its parent on
`sys.path`, where a folder named `code` or `math` would shadow the standard library. Its relative
imports (`from .data import build_eval`) work as in any package. So that a folder written like a
built-in one works too (`tasks/math/__init__.py` imports `tasks.math.data`), the name its author
would import it by (the folder's name, or for a folder of task folders the outer folder's name) is
bound to the same package as well, but only when no module of that name exists: a task folder
never hides an installed module. `metric.py` is imported by lm-eval on its own (from the YAML's
`!function metric.process_results`, relative to the YAML file), outside the package, so it imports
absolutely (`from tasks._common.scoring import ...`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import pkgutil
import re
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

from benchmark.errors import UserError
from benchmark.task_checks import check_external_task
from benchmark.taskinfo import BUILT_IN, TaskInfo

ENTRY_POINT_GROUP = "soupbench.tasks"


def discover(task_dirs: list[Path]) -> list[TaskInfo]:
    """Every task: built in, then from entry points, then from `task_dirs` (each a task folder or a
    folder of task folders); a clash of names or a broken task raises UserError."""
    found: dict[str, TaskInfo] = {}
    # one source after the other, so that a clash is said before a later source is even imported
    sources = (_built_in, _from_entry_points, *(functools.partial(_from_dir, d) for d in task_dirs))
    for info in (info for source in sources for info in source()):
        if info.name in found:
            raise UserError(f"task {info.name!r} is registered twice: {found[info.name].origin}, and "
                            f"{info.origin}; rename one of them (task names are unique)")
        found[info.name] = info
    return list(found.values())


def _built_in() -> list[TaskInfo]:
    import tasks as tasks_package

    infos = []
    for module in pkgutil.iter_modules(tasks_package.__path__):
        if not module.ispkg or module.name.startswith("_"):
            continue
        package = importlib.import_module(f"tasks.{module.name}")
        info = getattr(package, "TASK", None)
        if isinstance(info, TaskInfo):
            infos.append(replace(info, folder=Path(package.__file__).parent, origin=BUILT_IN))
    return infos


def _from_entry_points() -> list[TaskInfo]:
    """Tasks of installed packages: `name = "package.module"` (a task package whose `TASK` is a
    TaskInfo) in the group `soupbench.tasks`; its folder must hold the task's YAML and metric."""
    infos, seen = [], set()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (entry_point.name, entry_point.value) in seen:  # one distribution seen twice on sys.path
            continue
        seen.add((entry_point.name, entry_point.value))
        dist = entry_point.dist.name if entry_point.dist is not None else "?"
        origin = f"entry point {dist}:{entry_point.name}"
        where = f"task {origin} ({entry_point.value})"
        try:
            module = importlib.import_module(entry_point.module)
            loaded = entry_point.load()
        except Exception as err:  # a broken plugin says which one it is, in one line
            raise UserError(f"{where}: failed to import: {type(err).__name__}: {err}") from err
        info = loaded if isinstance(loaded, TaskInfo) else getattr(loaded, "TASK", None)
        if not isinstance(info, TaskInfo):
            raise UserError(f"{where}: defines no TASK = TaskInfo(...)")
        infos.append(_checked(info, Path(module.__file__).parent, origin, where))
    return infos


def _from_dir(task_dir: Path) -> list[TaskInfo]:
    if not task_dir.is_dir():
        raise UserError(f"task dir {task_dir}: no such folder")
    if _is_task_folder(task_dir):
        return [_from_folder(task_dir, _package_name(task_dir), task_dir.name)]
    children = [c for c in sorted(task_dir.iterdir()) if c.is_dir() and not c.name.startswith(("_", "."))]
    if not children:
        raise UserError(f"task dir {task_dir}: holds no task folder (a task folder holds its <name>.yaml and an "
                        "__init__.py that defines TASK = TaskInfo(...))")
    parent = _package_name(task_dir)
    _package(parent, task_dir, task_dir.name)
    return [_from_folder(child, f"{parent}.{child.name}", f"{task_dir.name}.{child.name}") for child in children]


def _is_task_folder(folder: Path) -> bool:
    """A folder with a YAML is a task folder; so is one with an `__init__.py` and no subfolder that
    looks like a task (a task folder missing its YAML is then refused as one, not as a folder of
    folders); anything else is a folder of task folders."""
    if any(folder.glob("*.yaml")):
        return True
    subfolders = [c for c in folder.iterdir() if c.is_dir() and not c.name.startswith(("_", "."))]
    looks_like_task = any((c / "__init__.py").is_file() or any(c.glob("*.yaml")) for c in subfolders)
    return (folder / "__init__.py").is_file() and not looks_like_task


def _from_folder(folder: Path, module_name: str, author_name: str) -> TaskInfo:
    where = f"task folder {folder}"
    if not (folder / "__init__.py").is_file():
        raise UserError(f"{where}: no __init__.py (it must define TASK = TaskInfo(...))")
    try:
        module = _package(module_name, folder, author_name)
    except Exception as err:  # the folder's own code failed: say which folder and why
        raise UserError(f"{where}: its __init__.py failed: {type(err).__name__}: {err}") from err
    info = getattr(module, "TASK", None)
    if not isinstance(info, TaskInfo):
        raise UserError(f"{where}: its __init__.py defines no TASK = TaskInfo(...)")
    return _checked(info, folder, f"folder {folder}", where)


def _checked(info: TaskInfo, folder: Path, origin: str, where: str) -> TaskInfo:
    info = replace(info, folder=folder, origin=origin)
    check_external_task(info, where)
    return info


def _package_name(folder: Path) -> str:
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    return f"soupbench_task_{digest}_{re.sub(r'[^0-9A-Za-z_]', '_', folder.name)}"


def _package(name: str, folder: Path, author_name: str) -> ModuleType:
    """The package of `folder` under `name` (imported once per process), also bound to the name its
    author would import it by (`author_name`, dotted for a folder inside a folder of task folders)
    when that name is free."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    init = folder / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
    else:  # a folder of task folders needs no __init__.py of its own
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    aliases = [author_name] if _is_free(author_name, name) else []
    for bound in [name, *aliases]:
        sys.modules[bound] = module  # before it runs: its own imports of itself find it here
    try:
        if spec.loader is not None:
            spec.loader.exec_module(module)
    except BaseException:
        for bound in [name, *aliases]:
            sys.modules.pop(bound, None)
        raise
    parent, _, short = name.rpartition(".")
    if parent:  # as the import system does: a subpackage is an attribute of its package
        setattr(sys.modules[parent], short, module)
    return module


def _is_free(author_name: str, name: str) -> bool:
    """Whether binding `author_name` hides nothing: no module is, or could be imported, under it.
    Inside a folder of task folders, the child's name is free when the outer folder's own name is
    bound to this outer package (the child would be found there anyway)."""
    if author_name in sys.modules or not all(part.isidentifier() for part in author_name.split(".")):
        return False
    author_parent, _, _ = author_name.rpartition(".")
    if author_parent:
        bound = sys.modules.get(author_parent)
        return bound is not None and bound.__name__ == name.rpartition(".")[0]
    try:
        return importlib.util.find_spec(author_name) is None
    except (ImportError, ValueError):
        return False
