"""Discovery of merge methods: the `methods` package, installed plugins, and single user files.

A method registers by existing: every `MergeMethod` subclass that sets `name` in a module of
`methods/` (names starting with `_` are helpers), in an entry point of the group
`soupbench.methods`, or in a file passed to `load_method_file` is collected into one
`Registry`. Nothing registers through import side effects.

`expert-<skill>` is not a registry entry but a family: it resolves to `SingleExpert(skill=...)`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from benchmark.errors import UserError
from benchmark.method import MergeMethod
from benchmark.registry import Registry, did_you_mean

ENTRY_POINT_GROUP = "soupbench.methods"
EXPERT_PREFIX = "expert-"

_registry: Registry[type[MergeMethod]] | None = None


def methods_in_module(module: ModuleType) -> list[type[MergeMethod]]:
    """Method classes defined (not merely imported) in `module` that set their own `name`."""
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, MergeMethod) and obj.__module__ == module.__name__ and "name" in vars(obj)
    ]


def _add(registry: Registry[type[MergeMethod]], cls: type[MergeMethod], origin: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, MergeMethod)):
        raise TypeError(f"{origin}: {cls!r} is not a subclass of benchmark.method.MergeMethod")
    if not isinstance(vars(cls).get("name"), str) or not cls.name:
        raise TypeError(f"{origin}: method class {cls.__name__} sets no `name`")
    if cls.name.startswith(EXPERT_PREFIX):
        raise ValueError(f"{origin}: method name {cls.name!r} is reserved for single experts "
                         f"({EXPERT_PREFIX}<skill>)")
    registry.add(cls.name, cls)


def build_registry(include_entry_points: bool = True) -> Registry[type[MergeMethod]]:
    """A fresh registry of the built-in methods (and installed plugins)."""
    import methods

    registry: Registry[type[MergeMethod]] = Registry("method")
    for info in sorted(pkgutil.iter_modules(methods.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"methods.{info.name}")
        for cls in methods_in_module(module):
            _add(registry, cls, f"methods/{info.name}.py")
    if include_entry_points:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                cls = entry_point.load()
            except Exception as exc:  # a broken plugin must say which one it is
                raise RuntimeError(
                    f"method plugin {entry_point.name!r} ({entry_point.value}) failed to load: {exc}"
                ) from exc
            _add(registry, cls, f"entry point {entry_point.name!r}")
    return registry


def registry() -> Registry[type[MergeMethod]]:
    """The process-wide method registry, discovered on first use."""
    global _registry
    if _registry is None:
        _registry = build_registry()
    return _registry


def load_method_file(
    path: str | Path, into: Registry[type[MergeMethod]] | None = None
) -> list[type[MergeMethod]]:
    """Import one user .py file and register the methods it defines (in the global registry by default)."""
    path = Path(path).resolve()
    if not path.is_file() or path.suffix != ".py":
        raise UserError(f"method file {path} does not exist or is not a .py file")
    # A stable module name per path: loading the same file twice reuses the module (and classes).
    module_name = f"soupbench_user_methods_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import method file {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look modules up here
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    found = methods_in_module(module)
    if not found:
        raise UserError(f"method file {path} defines no MergeMethod subclass with a `name`")
    target = into if into is not None else registry()
    for cls in found:
        _add(target, cls, str(path))
    return found


def _single_expert() -> type[MergeMethod]:
    from methods.single_expert import SingleExpert

    return SingleExpert


def get_method_class(name: str, into: Registry[type[MergeMethod]] | None = None) -> type[MergeMethod]:
    """The class behind a method name (`expert-<skill>` gives SingleExpert)."""
    reg = into if into is not None else registry()
    if name.startswith(EXPERT_PREFIX) and name not in reg:
        return _single_expert()
    return reg.get(name)


def _describe_validation(name: str, error: ValidationError, accepted: list[str]) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(params)"
        hint = did_you_mean(key, accepted) if item["type"] == "extra_forbidden" else ""
        problems.append(f"{key!r}: {item['msg']}.{hint}" if hint else f"{key!r}: {item['msg']}")
    accepted_text = ", ".join(accepted) or "(none)"
    return f"method {name!r}: bad parameter {'; '.join(problems)}. Accepted parameters: {accepted_text}"


def create_method(
    name: str, params: dict[str, Any] | None = None, skills: list[str] | None = None,
    into: Registry[type[MergeMethod]] | None = None,
) -> MergeMethod:
    """Instantiate a method by name with validated parameters.

    `expert-<skill>` becomes SingleExpert(skill=...), and the skill must be one of `skills` when
    those are given. Invalid parameters raise UserError naming the method and the bad key.
    """
    params = dict(params or {})
    cls = get_method_class(name, into)
    if cls is _single_expert():
        if name.startswith(EXPERT_PREFIX):
            skill = name[len(EXPERT_PREFIX):]
            if params.setdefault("skill", skill) != skill:
                raise UserError(f"method {name!r}: parameter skill={params['skill']!r} contradicts the name")
        if skills is not None and "skill" in params and params["skill"] not in skills:
            known = ", ".join(skills) or "(none)"
            hint = did_you_mean(params["skill"], skills)
            if hint and name.startswith(EXPERT_PREFIX):  # say it as the name the user typed
                hint = did_you_mean(name, [f"{EXPERT_PREFIX}{skill}" for skill in skills])
            raise UserError(f"method {name!r}: unknown skill {params['skill']!r}.{hint} Skills of this suite: {known}")
    try:
        validated = cls.Params(**params)
    except ValidationError as exc:
        raise UserError(_describe_validation(name, exc, list(cls.Params.model_fields))) from None
    return cls(validated)


def method_names(skills: list[str], into: Registry[type[MergeMethod]] | None = None) -> list[str]:
    """All runnable method names: base, expert-<skill> per skill, then the others sorted."""
    reg = into if into is not None else registry()
    expert_cls = _single_expert()
    others = [n for n in reg.names() if n != "base" and reg.get(n) is not expert_cls]
    head = ["base"] if "base" in reg else []
    return head + [f"{EXPERT_PREFIX}{skill}" for skill in skills] + others
