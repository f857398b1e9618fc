"""Rows of a real data set, from a local file or the Hugging Face hub, through `datasets`.

A suite names its data as a local file (`.json` holding a JSON array or JSON lines, `.jsonl`,
`.parquet`) or a hub data set id; both are read with `datasets.load_dataset` (the `json` or
`parquet` builder for a file, the hub id with the data set's own file and split otherwise), so a
file downloaded from the hub and the hub id give the same rows. Its cache goes under SoupBench's
cache (`SOUPBENCH_CACHE`), never the user's Hugging Face data sets cache, and every failure is one
`UserError` line naming the data and the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from benchmark import cache
from benchmark.errors import UserError
from benchmark.errors import first_line

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class HubData:
    """Where a data set lives on the hub and what its rows hold: the loaders' declarations."""

    repo_id: str  # the data set's hub id, the default source
    split: str  # the split the suite reads (train for all three of the paper's sets)
    fields: tuple[str, ...]  # the columns a row must have
    data_file: str | None = None  # one file of the repository, when it holds several

    def describe(self) -> str:
        return f"{self.repo_id} ({self.data_file or 'split ' + self.split})"


# The hub's repository ids: `name` or `owner/name`, letters, digits, `-`, `_`, `.` (huggingface_hub's
# validate_repo_id, without importing it: the CLI decides about downloads before that import).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")


def is_local(ref: str) -> bool:
    """A path on this machine (it exists, is not spelled like a hub id, or names a data file by its
    suffix) rather than a hub id."""
    return Path(ref).exists() or _HUB_ID.match(ref) is None or ".." in ref or "--" in ref \
        or ref.lower().endswith(tuple(FILE_BUILDERS))


def read_rows(ref: str, spec: HubData, what: str) -> list[dict]:
    """The rows of `ref` (a local file, or a hub id read as `spec` says), each checked to hold
    `spec.fields`; `what` names the data in messages (`skill math's data`)."""
    import datasets

    cache_dir = str(cache.cache_root() / "datasets")
    try:
        if is_local(ref):
            path = Path(ref)
            if not path.is_file():
                raise UserError(f"{what}: {ref} does not exist (give a .json, .jsonl or .parquet file, or a hub id)")
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise UserError(f"{what}: {ref} is a {path.suffix or 'suffix-less'} file; "
                                f"a data file is one of {', '.join(FILE_BUILDERS)}")
            table = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache_dir)
        else:
            table = datasets.load_dataset(ref, data_files=spec.data_file, split=spec.split, cache_dir=cache_dir)
    except UserError:
        raise
    except Exception as err:  # unreachable hub, a file that is not what its suffix says, ...
        raise UserError(f"{what}: cannot read {ref} ({first_line(err)})") from err
    missing = [name for name in spec.fields if name not in table.column_names]
    if missing:
        raise UserError(f"{what}: {ref} has no field(s) {missing} (its fields: {table.column_names}); "
                        f"rows of {spec.repo_id} hold {list(spec.fields)}")
    return table.to_list()


def sample_rows(rows: list[dict], n: int, seed: int) -> list[dict]:
    """`n` rows drawn with `seed`, in the file's order; all of them when `n` covers the file."""
    import random

    if n >= len(rows):
        return list(rows)
    return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n))]
