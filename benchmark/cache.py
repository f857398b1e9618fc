"""Where built things live: base models, experts, merges, task data. Keyed by content hashes, never in git.

An entry is a folder whose writer seals it once every file is written (`mark_complete`): the seal
records the sha256 of each file. A reader checks the seal before it loads (`usable`), so an entry
truncated by a full disk, or changed by hand since, is found before it is loaded, said in one line
and rebuilt, rather than ending every later run in a loader's traceback (a truncated file) or,
worse, being loaded as if nothing happened (a changed but finite expert would be stored under a
second fingerprint for the same recipe and seed). Hashing costs little beside loading: see
`scripts/bench_cache_check.py` for the figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

from benchmark.hashing import sha256_file

MARKER = ".complete"
SEAL_FORMAT = 1


def cache_root() -> Path:
    """`SOUPBENCH_CACHE`, else the user's cache folder (e.g. ~/.cache/soupbench)."""
    root = Path(os.environ.get("SOUPBENCH_CACHE") or user_cache_dir("soupbench"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def content_hash(*parts: object) -> str:
    """A short stable hash of JSON-serialisable parts (recipes, fingerprints, seeds)."""
    canonical = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def cache_dir(kind: str, key: str) -> Path:
    return cache_root() / kind / key


def is_complete(folder: Path) -> bool:
    """A cache entry counts only once its writer has marked it complete (crash-safe)."""
    return (folder / MARKER).exists()


def _entry_files(folder: Path) -> dict[str, Path]:
    return {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != MARKER}


def mark_complete(folder: Path, facts: dict[str, Any] | None = None) -> None:
    """Seal an entry whose files are all written: the marker records each file's sha256, and `facts`
    computed from those files (a base's fingerprint), which hold as long as the check passes, so a
    load need not read the files a second time to compute them again (`seal_facts`)."""
    seal = {"format": SEAL_FORMAT, "files": {name: sha256_file(path) for name, path in _entry_files(folder).items()},
            "facts": facts or {}}
    partial = folder / f"{MARKER}.partial"
    partial.write_text(json.dumps(seal, indent=1, sort_keys=True))
    os.replace(partial, folder / MARKER)  # a crash while sealing leaves the entry unsealed, not half sealed


def staging_dir(folder: Path) -> Path:
    """An empty folder beside `folder`, this process's own, to write an entry into (see `publish`)."""
    staging = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, folder: Path, facts: dict[str, Any] | None = None) -> None:
    """Seal the entry written in `staging` and move it to `folder` in one rename.

    Another runner on the same cache then sees no entry or a whole sealed one, never files being
    written (which its check would take for a damaged entry). When another runner published the
    same entry first, that one is kept and this one dropped: both were built from one recipe.
    """
    mark_complete(staging, facts)
    try:
        os.rename(staging, folder)
        return
    except OSError:  # `folder` exists: another runner's entry, or an unsealed leftover of a crash
        pass
    if is_complete(folder) and problem(folder) is None:
        shutil.rmtree(staging, ignore_errors=True)
        return
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(staging, folder)


def seal_facts(folder: Path) -> dict[str, Any]:
    """The facts the entry was sealed with; {} for an entry sealed without any (or by an older SoupBench).
    Meaningful only once `usable` (or `problem`) has passed on the entry."""
    try:
        return dict(json.loads((folder / MARKER).read_text()).get("facts") or {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}


def problem(folder: Path) -> str | None:
    """What is wrong with a complete entry, or None when every file it recorded has its recorded
    bytes. Files added later (a reader's side files) do not count; a recorded file that is missing,
    or whose sha256 differs, does.

    An entry sealed by an older SoupBench records no hashes (an empty marker): its files are checked
    for what a truncation breaks (every safetensors header describes exactly its file, every JSON
    file parses) and, if they pass, its hashes are recorded now, so it is checked in full from then on.
    """
    text = (folder / MARKER).read_text()
    if not text.strip():
        return _upgrade_legacy(folder)
    try:
        recorded = json.loads(text)["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"has an unreadable seal ({MARKER})"
    for name, expected in sorted(recorded.items()):
        path = folder / name
        if not path.is_file():
            return f"lost its file {name}"
        found = sha256_file(path)
        if found != expected:
            return (f"has a changed or truncated {name} (sha256 {found[:16]}..., {path.stat().st_size} bytes; "
                    f"sealed as {expected[:16]}...)")
    return None


def _upgrade_legacy(folder: Path) -> str | None:
    from benchmark.errors import UserError
    from benchmark.tensor_files import check_safetensors, read_json_object

    for name, path in _entry_files(folder).items():
        try:
            if name.endswith(".safetensors"):
                check_safetensors(path, "file")
            elif name.endswith(".json"):
                read_json_object(path, "file")
        except UserError as err:
            return f"has a broken {name} ({err})"
    mark_complete(folder)
    return None


def usable(folder: Path, what: str, log: Callable[[str], None]) -> bool:
    """Whether the entry at `folder` is complete and intact, so it can be loaded as it is.

    A broken one is removed, with one line naming `what` it was and what is wrong with it, and
    False is returned: the caller builds it anew, as it does for an entry that was never made.
    """
    if not is_complete(folder):
        return False
    found = problem(folder)
    if found is None:
        return True
    log(f"{what}: the cache entry {folder} {found}; rebuilding it")
    shutil.rmtree(folder, ignore_errors=True)
    return False
