"""The loader every task YAML names as its `custom_dataset`: one local JSONL file per task.

lm-eval calls `custom_dataset(**metadata, **dataset_kwargs)` (see `ConfigurableTask.download`).
The YAML's `dataset_kwargs` names the task; the metadata (`TaskManager(metadata=...)` in process,
`--metadata '{"data_dir": ...}'` on lm-eval's CLI) says where the files are. The files are written
by `benchmark.evaluation.write_task_data` from each task's builder, so nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when lm-eval loads a task, not by everything that names a data file
    import datasets

SPLIT = "test"


def data_file(data_dir: str | Path, task: str) -> Path:
    return Path(data_dir) / f"{task}.jsonl"


def load_task_jsonl(task: str, data_dir: str | None = None, **_metadata) -> "datasets.DatasetDict":
    """The task's documents as a one-split DatasetDict (built in memory: no HF cache is written)."""
    import datasets

    if data_dir is None:
        raise ValueError(
            f"task {task!r} reads its documents from <data_dir>/{task}.jsonl, but no data_dir was "
            "given: pass metadata={'data_dir': ...} to TaskManager, or --metadata "
            "'{\"data_dir\": \"...\"}' to lm_eval, after benchmark.evaluation.write_task_data")
    path = data_file(data_dir, task)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; write it with benchmark.evaluation.write_task_data")
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return datasets.DatasetDict({SPLIT: datasets.Dataset.from_list(rows)})
