"""The one description of a run: `RunSpec`, what a stored row (or a bundle's run) is a result of.

As HELM's `RunSpec`: the runner builds it once per cell, the database stores it (the `spec` JSON
column), a bundle carries it, the leaderboard reads a method's card from it instead of from the
method's source, and `rerun_spec` (benchmark.runner) recomputes the cell from it alone.

Rows stored before the spec was typed (the micro release's reference results) have a spec with no
`card` and no `experts`; `RunSpec.from_stored` reads them with what can be recovered, so old
databases stay readable.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from benchmark.suite import Suite

if TYPE_CHECKING:
    from benchmark.method import MergeMethod


class MethodCard(BaseModel):
    """What a method says about itself (its class attributes), as the leaderboard shows it."""

    model_config = ConfigDict(frozen=True)

    description: str = ""
    paper: str = ""
    family: str = "other"
    consumes: str = "nothing"
    # sha256 of the file that defines the method's class, when it has one: which code made the row.
    source_sha256: str | None = None

    @classmethod
    def of(cls, method: MergeMethod) -> MethodCard:
        return cls(description=method.description, paper=method.paper, family=method.family,
                   consumes=method.consumes.value, source_sha256=method_source_sha256(type(method)))


class RunSpec(BaseModel):
    """Suite, method (name, class, parameters, card), the experts merged, the seed and the task.

    `tasks` are the tasks scored on the same merged model in one pass (the runner merges once per
    expert group); `task` is this row's. Enough to rerun the cell: the suite gives base, experts and
    data, the method name and parameters give the merge (the class must be importable or loaded).
    """

    model_config = ConfigDict(frozen=True)

    suite: Suite
    method: str
    method_class: str
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int
    task: str
    tasks: tuple[str, ...] = ()
    experts: tuple[str, ...] = ()
    card: MethodCard | None = None

    @classmethod
    def from_stored(cls, spec: dict[str, Any]) -> RunSpec | None:
        """The typed spec of a stored row, or None for a row whose spec cannot describe a run (a
        failed cell stored before specs were typed holds only method, task and seed)."""
        if not isinstance(spec, dict) or "suite" not in spec or "method_class" not in spec:
            return None
        return cls.model_validate(spec)

    def stored(self) -> dict[str, Any]:
        """The JSON the database and bundles keep."""
        return self.model_dump(mode="json")


def method_source_sha256(cls: type) -> str | None:
    """sha256 of the source file that defines `cls`, or None when it has none (built in C, made in a
    REPL). It names the code that produced a row: a changed method file gives another hash."""
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:
        return None
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
