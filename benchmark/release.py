"""The micro release: a base and every seed's experts, built once by `soupbench release`, shipped in
the repository with a manifest, and used by every run whose recipe matches it.

FusionBench and MergeBench ship fixed checkpoints for the same reason: a method is compared with
the others only on the same weights, and pretraining is the slowest step of micro (most of an hour
on a laptop). The manifest names each released file's sha256, the recipe hash it was built from
(`benchmark.keys.base_recipe_hash`, `benchmark.keys.expert_key`: digests of the corpus and
of each skill's data included) and the build's provenance. A run whose recipe hash matches loads the
released file after checking its sha256; a changed byte is refused before anything is computed.

Layout (`benchmark/micro/release/`, or `SOUPBENCH_RELEASE`):

    manifest.json
    base/            config, safetensors weights, tokenizer files
    experts/seed-<n>/<skill>/   PEFT adapter folders
    merges/seed-<n>/<method>/   results of the methods that train (data_mix, cat), with their cost
    reference.db.gz  every built-in method on every task and seed of the suite (SQLite, gzipped:
                     unpacked into the cache on first use)
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark import cache
from benchmark.errors import UserError
from benchmark.hashing import sha256_file

MANIFEST = "manifest.json"
REFERENCE_DB = "reference.db"
REFERENCE_GZ = "reference.db.gz"
FORMAT = 1
DEFAULT_DIR = Path(__file__).resolve().parent / "micro" / "release"
RELEASE_COMMAND = "soupbench release micro"


class ReleaseIntegrityError(UserError, RuntimeError):
    """A released file whose bytes are not those the manifest names (refused, never rebuilt: a
    release is what every user is scored on, so only its keeper may change it)."""


def release_dir() -> Path:
    """`SOUPBENCH_RELEASE`, else the release shipped in the package."""
    return Path(os.environ.get("SOUPBENCH_RELEASE") or DEFAULT_DIR)


@dataclass(frozen=True)
class Release:
    """A release folder and its manifest; a file's sha256 is computed once per process (see `verify`)."""

    root: Path
    manifest: dict[str, Any]

    @property
    def base(self) -> dict[str, Any]:
        return self.manifest["base"]

    def entry(self, kind: str, key: str) -> dict[str, Any] | None:
        """The released artifact of `kind` ("experts" or "merges") built from recipe hash `key`, if any."""
        return next((e for e in self.manifest.get(kind, []) if e["recipe_hash"] == key), None)

    def verify(self, files: dict[str, str]) -> None:
        """Check `files` (path relative to the release -> sha256) against the bytes on disk."""
        for relative, expected in sorted(files.items()):
            path = self.root / relative
            if not path.is_file():
                raise ReleaseIntegrityError(f"released file {path} is missing (the manifest names it with sha256 "
                                            f"{expected}); restore it (git checkout -- {path}) or rebuild with "
                                            f"`{RELEASE_COMMAND}`")
            found = _sha256_cached(path, path.stat().st_mtime_ns, path.stat().st_size)
            if found != expected:
                raise ReleaseIntegrityError(
                    f"released file {path} has sha256 {found}, but the manifest names {expected}: it was changed "
                    f"after the release was built; restore it (git checkout -- {path}) or rebuild with "
                    f"`{RELEASE_COMMAND}`")

    def verify_all(self) -> None:
        """Every file the manifest names: the base, every expert and the reference results."""
        files = dict(self.base["files"])
        for entry in self.manifest["experts"] + self.manifest.get("merges", []):
            files.update(entry["files"])
        if "reference" in self.manifest:
            files[self.manifest["reference"]["file"]] = self.manifest["reference"]["sha256"]
        self.verify(files)


@lru_cache(maxsize=256)
def _sha256_cached(path: Path, mtime_ns: int, size: int) -> str:
    """One read per file per process (a grid checks the same base once per seed)."""
    return sha256_file(path)


def load_release(root: Path | None = None) -> Release | None:
    """The release at `root` (default `release_dir()`), or None when there is none."""
    root = root or release_dir()
    manifest_file = root / MANIFEST
    if not manifest_file.is_file():
        return None
    try:
        manifest = json.loads(manifest_file.read_text())
    except json.JSONDecodeError as err:
        raise ReleaseIntegrityError(f"release manifest {manifest_file} is not valid JSON ({err})") from None
    if manifest.get("format") != FORMAT:
        raise ReleaseIntegrityError(f"release manifest {manifest_file} has format {manifest.get('format')!r}; "
                                    f"this SoupBench reads format {FORMAT}")
    return Release(root, manifest)


def released_base(recipe_hash: str) -> Path | None:
    """The released base folder for `recipe_hash`; None if the release has no such base.

    Every file of the release is checked here, before a run computes anything: a changed expert
    found halfway through a grid would leave half a grid stored.
    """
    release = load_release()
    if release is None or release.base["recipe_hash"] != recipe_hash:
        return None
    release.verify_all()
    return release.root / release.base["folder"]


def released_expert(key: str) -> Path | None:
    """The released adapter folder for expert recipe hash `key`, its files checked; else None."""
    return _released("experts", key)


def released_merge(key: str) -> Path | None:
    """The released result of a trained method (benchmark.merge_cache) for `key`, checked; else None."""
    return _released("merges", key)


def _released(kind: str, key: str) -> Path | None:
    release = load_release()
    entry = release.entry(kind, key) if release is not None else None
    if entry is None:
        return None
    release.verify(entry["files"])
    return release.root / entry["folder"]


def reference_db_url(root: Path | None = None, log: Callable[[str], None] = lambda message: None) -> str | None:
    """The SQLite URL of the release's reference results, checked; None without a release (open it with
    `benchmark.results.open_readonly`, which never writes). The unpacked copy in the cache is checked
    too, and unpacked again (saying so through `log`) when it was changed since."""
    release = load_release(root)
    if release is None or "reference" not in release.manifest:
        return None
    reference = release.manifest["reference"]
    release.verify({reference["file"]: reference["sha256"]})
    shipped = release.root / reference["file"]
    if shipped.suffix != ".gz":
        return f"sqlite:///{shipped.resolve()}"
    folder = cache.cache_dir("reference", reference["sha256"][:16])
    if not cache.usable(folder, "the release's reference results", log):  # unpacked once, beside other built things
        staging = cache.staging_dir(folder)
        with gzip.open(shipped, "rb") as source, (staging / REFERENCE_DB).open("wb") as sink:
            shutil.copyfileobj(source, sink)
        cache.publish(staging, folder)
    return f"sqlite:///{(folder / REFERENCE_DB).resolve()}"


def file_hashes(root: Path, folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, keyed by its path relative to the release `root`."""
    return {path.relative_to(root).as_posix(): sha256_file(path)
            for path in sorted(folder.rglob("*")) if path.is_file()}
