"""A method's description, paper and family: from the run's stored card, else from its source.

Runs store the method's card in their spec (`benchmark.run_spec.MethodCard`: description, paper,
family, as the method said when it ran); `describe(spec)` reads it. Rows stored before the spec was
typed (the micro release's reference results) have only the class path (`spec["method_class"]`,
e.g. `methods.ties.Ties`), and for them the card is read from the class's source. Importing the method catalog to learn them costs ~8 s (it
pulls in torch, peft and the trainer), which alone would break the site's 2-second budget, and it
would execute plugin code inside the web server. These class attributes are plain string literals
by convention, so reading them from the class body's syntax tree is instant and safe. When the
source cannot be found (a plugin that is no longer installed, a one-off `--method-file`), the
page still renders with the fallbacks below.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

FALLBACK_FAMILY = "other"
_FIELDS = ("description", "paper", "family")


@dataclass(frozen=True)
class MethodInfo:
    """What a method class says about itself; `found` is False when its source was not found."""

    class_path: str
    description: str = ""
    paper: str = ""
    family: str = FALLBACK_FAMILY
    found: bool = False


def describe(spec: dict | None) -> MethodInfo:
    """The card a run stored with its spec; for an older row, the one its class's source gives."""
    spec = spec or {}
    card = spec.get("card")
    if isinstance(card, dict):
        return MethodInfo(spec.get("method_class") or "", description=card.get("description") or "",
                          paper=card.get("paper") or "", family=card.get("family") or FALLBACK_FAMILY,
                          found=True)
    return method_info(spec.get("method_class"))


def _module_file(module: str) -> Path | None:
    """The .py file of a dotted module name, located without executing any package code.

    `importlib.util.find_spec("a.b")` would import package `a` first; only the top level is
    looked up through the import system, the rest is a walk down the package folders.
    """
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if len(parts) == 1:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    for folder in spec.submodule_search_locations or []:
        path = Path(folder).joinpath(*parts[1:])
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _class_attributes(tree: ast.Module, class_name: str) -> dict[str, str] | None:
    """Literal string attributes of a top-level class, following bases defined in the same file."""
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    found: dict[str, str] = {}
    seen: set[str] = set()
    name: str | None = class_name
    if name not in classes:
        return None
    while name in classes and name not in seen:
        seen.add(name)
        node = classes[name]
        for statement in node.body:
            targets = []
            if isinstance(statement, ast.Assign):
                targets = [t.id for t in statement.targets if isinstance(t, ast.Name)]
            elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                targets = [statement.target.id]
            for target in targets:
                if target in _FIELDS and target not in found and statement.value is not None:
                    try:
                        value = ast.literal_eval(statement.value)
                    except ValueError:
                        continue
                    if isinstance(value, str):
                        found[target] = value
        bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
        name = bases[0] if bases else None
    return found


@lru_cache(maxsize=512)
def method_info(class_path: str | None) -> MethodInfo:
    """Metadata of the class at `module.Class`; fallbacks when it cannot be read."""
    if not class_path or "." not in class_path:
        return MethodInfo(class_path or "")
    module, class_name = class_path.rsplit(".", 1)
    path = _module_file(module)
    if path is None:
        return MethodInfo(class_path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return MethodInfo(class_path)
    attributes = _class_attributes(tree, class_name)
    if attributes is None:
        return MethodInfo(class_path)
    return MethodInfo(class_path, found=True, **{"family": FALLBACK_FAMILY, **attributes})
