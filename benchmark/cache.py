"""Where built things live: base models, experts, task data. Keyed by content hashes, never in git."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from platformdirs import user_cache_dir


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
    return (folder / ".complete").exists()


def mark_complete(folder: Path) -> None:
    (folder / ".complete").write_text("")
