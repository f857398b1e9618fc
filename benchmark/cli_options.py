"""Options that several `soupbench` commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

TaskDirs = Annotated[Optional[list[Path]], typer.Option(
    "--task-dir", help="A task folder, or a folder of task folders, whose tasks to register beside the "
                       "built-in ones (repeatable; also SOUPBENCH_TASK_DIRS, separated by the path separator).")]


def use_task_dirs(task_dirs: list[Path] | None) -> None:
    """Register the command's task dirs and build the task registry now, before anything reads it: a
    broken folder or a clash of names is refused in one line before any work."""
    from benchmark.taskinfo import TASKS

    TASKS.add_dirs(task_dirs or [])
    TASKS.build()
