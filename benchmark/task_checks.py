"""The checks an outside task passes when it is registered, each failure one line naming the task.

A task from a folder or an entry point is checked before anything uses it, so that a broken one
costs no pretraining and fails where its author can see why: its YAML is the one its `TASK` names
and lm-eval reads it (every `!function` resolved, with lm-eval's own loader, as
`benchmark.evaluation` loads it), its primary metric is one the YAML reports, and its builders
build documents (two eval documents, two training examples for a skill). The built-in tasks are
held to the same by the test suite rather than on every start.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from benchmark.errors import UserError
from benchmark.taskinfo import TaskInfo

CHECKED_DOCUMENTS = 2
EVAL_FIELDS = ("prompt", "target")
TRAIN_FIELDS = ("prompt", "completion")


def check_external_task(info: TaskInfo, where: str) -> None:
    """Refuse a task that its YAML, metric code or builders would break later (UserError, `where: ...`)."""
    _check_yaml(info, where)
    _check_builder(info.build_eval, "build_eval", EVAL_FIELDS, where)
    if info.build_train is not None:
        _check_builder(info.build_train, "build_train", TRAIN_FIELDS, where)


def _check_yaml(info: TaskInfo, where: str) -> None:
    assert info.folder is not None
    path = info.yaml_path
    if not path.is_file():
        others = sorted(p.name for p in info.folder.glob("*.yaml"))
        if others:
            raise UserError(f"{where}: its TASK.name {info.name!r} differs from the folder's YAML name "
                            f"({', '.join(others)}); the YAML must be {info.name}.yaml")
        raise UserError(f"{where}: no {info.name}.yaml (the task's lm-eval YAML)")
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        config = load_yaml(path, resolve_func=True)
    except Exception as err:  # a missing function, a module that fails, bad YAML: all said in one line
        raise UserError(f"{where}: lm-eval cannot load {path.name}: {type(err).__name__}: {err}") from err
    if config.get("task") != info.name:
        raise UserError(f"{where}: {path.name} names task {config.get('task')!r}, not {info.name!r}")
    if "process_results" in config and not callable(config["process_results"]):
        raise UserError(f"{where}: {path.name}'s process_results is not a function; "
                        "write `process_results: !function metric.process_results`")
    metrics = [entry.get("metric") for entry in config.get("metric_list") or [] if isinstance(entry, dict)]
    if info.primary_metric not in metrics:
        raise UserError(f"{where}: its primary metric {info.primary_metric!r} is not in {path.name}'s metric_list "
                        f"({', '.join(map(str, metrics)) or 'empty'})")


def _check_builder(builder: Callable, what: str, fields: tuple[str, ...], where: str) -> None:
    try:
        docs = builder(CHECKED_DOCUMENTS, 0)
    except Exception as err:
        raise UserError(f"{where}: its data builder {what} raised {type(err).__name__}: {err}") from err
    if not isinstance(docs, list) or len(docs) != CHECKED_DOCUMENTS:
        shown = f"{len(docs)} items" if isinstance(docs, list) else type(docs).__name__
        raise UserError(f"{where}: {what}({CHECKED_DOCUMENTS}, 0) returned {shown}, not a list of "
                        f"{CHECKED_DOCUMENTS} documents")
    for doc in docs:
        missing = [f for f in fields if not isinstance(doc, dict) or not isinstance(doc.get(f), str)]
        if missing:
            raise UserError(f"{where}: {what} built a document without the text field(s) {missing} "
                            f"(each needs {', '.join(fields)})")
    try:
        json.dumps(docs)  # written to the task's JSONL file for lm-eval
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: {what} built documents that are not JSON: {err}") from err
