"""Build a release (`soupbench release`): the base, every seed's experts and the reference results,
written into a release folder with its manifest; and check whether a rebuild reproduces it.

The release is built by the same code path a run takes (`prepare_base`, `prepare_experts`,
`run_grid`), with the release itself switched off, so what is shipped is what a user's run would
have built on this machine with the pinned packages.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmark import cache, catalog
from benchmark.adapters import CONFIG_NAME, SAFETENSORS_NAME
from benchmark.base_model import BASE_FILES, default_device, prepare_base
from benchmark.errors import UserError
from benchmark.experts import prepare_experts, skill_training_data
from benchmark.keys import base_recipe_hash, expert_key
from benchmark.hashing import sha256_file
from benchmark.release import FORMAT, MANIFEST, REFERENCE_DB, REFERENCE_GZ, Release, file_hashes
from benchmark.runner import Reporter, run_grid
from benchmark.storage import collect_provenance, open_store
from benchmark.suite import MicroBase, Suite

EXPERT_FILES = (CONFIG_NAME, SAFETENSORS_NAME)


def build_release(suite: Suite, out: Path, reporter: Reporter | None = None,
                  methods: list[str] | None = None) -> dict[str, Any]:
    """Build `suite`'s release into `out` (replaced only once everything is built); return the manifest.

    Base and experts come from the cache when this machine built them before (the cache is keyed
    by the same recipe hashes); the reference grid runs into the staging folder's database, so a
    second attempt after an interruption computes only the cells still missing.
    """
    if not isinstance(suite.base, MicroBase):
        raise UserError(f"suite {suite.name!r}: only a micro base (built from code) can be released")
    reporter = reporter or Reporter()
    device = default_device()
    # Kept across attempts: an interrupted release resumes (the base from its checkpoint, experts
    # from the cache, the reference grid from the cells its database already holds).
    staging = cache.cache_root() / "release-staging" / cache.content_hash(str(out.resolve()))
    shutil.rmtree(staging / "base", ignore_errors=True)
    shutil.rmtree(staging / "experts", ignore_errors=True)
    shutil.rmtree(staging / "merges", ignore_errors=True)
    (staging / "experts").mkdir(parents=True)

    start = time.perf_counter()
    base = prepare_base(suite, reporter.progress("pretraining base") if reporter.progress else None,
                        device=device, log=reporter.log, use_release=False)
    base_seconds = time.perf_counter() - start
    shutil.copytree(base.path, staging / "base", ignore=lambda _, names: [n for n in names if n not in BASE_FILES])

    data = skill_training_data(suite)
    experts: list[dict[str, Any]] = []
    expert_seconds: dict[str, float] = {}
    for seed in suite.seeds:
        start = time.perf_counter()
        trained = prepare_experts(suite, base, seed, data, reporter.progress, reporter.log, use_release=False)
        seconds = time.perf_counter() - start
        for expert in trained:
            folder = staging / "experts" / f"seed-{seed}" / expert.name
            folder.mkdir(parents=True)
            for name in EXPERT_FILES:
                shutil.copy2(Path(expert.metadata["path"]) / name, folder / name)
            experts.append({"skill": expert.name, "seed": seed, "folder": folder.relative_to(staging).as_posix(),
                            "recipe_hash": expert_key(suite, base.fingerprint, expert.name, seed, data[expert.name]),
                            "fingerprint": expert.fingerprint, "files": file_hashes(staging, folder)})
        expert_seconds[f"seed-{seed}"] = round(seconds, 1)

    start = time.perf_counter()
    store = open_store(f"sqlite:///{staging / REFERENCE_DB}")
    try:
        summary = run_grid(suite, store, methods=methods or catalog.method_names(suite.skill_names),
                           tasks=list(suite.tasks), seeds=list(suite.seeds), reporter=reporter, use_release=False)
    finally:
        store.close()
    if summary.failed:
        raise UserError(f"the reference grid had failed cells, nothing released: {summary.failed}")
    grid_seconds = time.perf_counter() - start
    _seal(staging / REFERENCE_DB)
    merges = _ship_merges(staging)
    _compress(staging / REFERENCE_DB, staging / REFERENCE_GZ)

    manifest = {
        "format": FORMAT,
        "suite": suite.name,
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base": {"folder": "base", "recipe_hash": base_recipe_hash(suite), "fingerprint": base.fingerprint,
                 "files": file_hashes(staging, staging / "base"), "device": device,
                 "seconds_this_run": round(base_seconds, 1), "build_log": _build_log(base.path)},
        "experts": experts,
        "expert_seconds_this_run": expert_seconds,
        "merges": merges,
        "reference": {"file": REFERENCE_GZ, "sha256": sha256_file(staging / REFERENCE_GZ),
                      "methods": methods or catalog.method_names(suite.skill_names), "tasks": list(suite.tasks),
                      "seeds": list(suite.seeds), "cells": _count_cells(staging / REFERENCE_DB),
                      "seconds_this_run": round(grid_seconds, 1)},
        "provenance": collect_provenance(),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    # Staged in the cache (it outlives a work tree laid anew), then swapped in whole.
    incoming = out.parent / f".{out.name}.incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    shutil.copytree(staging, incoming, ignore=shutil.ignore_patterns(REFERENCE_DB))  # shipped gzipped
    shutil.rmtree(out, ignore_errors=True)
    os.replace(incoming, out)
    shutil.rmtree(staging)
    return manifest


def _ship_merges(staging: Path) -> list[dict[str, Any]]:
    """Copy the cached results of the methods that train (one per method and seed, named by the
    reference runs' provenance) into the release, so a user's grid reuses them."""
    with sqlite3.connect(staging / REFERENCE_DB) as connection:
        rows = connection.execute("select distinct method, seed, json_extract(provenance, '$.merge_result.key') "
                                  "from runs where status = 'ok' and json_extract(provenance, '$.merge_result.key') "
                                  "is not null order by method, seed").fetchall()
    shipped = []
    for method, seed, key in rows:
        folder = staging / "merges" / f"seed-{seed}" / method
        shutil.copytree(cache.cache_dir("merges", key), folder, ignore=shutil.ignore_patterns(".complete"))
        (folder / ".complete").write_text("")
        shipped.append({"method": method, "seed": seed, "recipe_hash": key,
                        "folder": folder.relative_to(staging).as_posix(), "files": file_hashes(staging, folder)})
    return shipped


def _compress(db: Path, target: Path) -> None:
    """gzip the reference database: per-sample prompts and outputs compress about fivefold, and the
    release has to fit in the repository (benchmark.release unpacks it into the cache on first use)."""
    with db.open("rb") as source, gzip.GzipFile(target, "wb", mtime=0) as sink:
        shutil.copyfileobj(source, sink)


def _seal(db: Path) -> None:
    """One self-contained file: out of WAL mode (a read-only reader of a WAL database needs to
    write its -shm file beside it, which a read-only checkout may not allow) and vacuumed."""
    with sqlite3.connect(db) as connection:
        connection.execute("pragma journal_mode = delete")
    connection = sqlite3.connect(db)
    connection.execute("vacuum")
    connection.close()


def _count_cells(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return connection.execute("select count(*) from runs where status = 'ok'").fetchone()[0]


def _build_log(folder: Path) -> dict[str, str]:
    """The base build's own record (pretraining.txt: corpus tokens, loss, wall times, device)."""
    log = folder / "pretraining.txt"
    if not log.is_file():
        return {}
    return dict(line.split(": ", 1) for line in log.read_text().splitlines() if ": " in line)


def check_rebuild(suite: Suite, release: Release, what: str,
                  reporter: Reporter | None = None) -> list[tuple[str, str, str, bool]]:
    """Rebuild `what` ("experts": on the released base; "all": the base too) in an empty cache and
    compare with the release; rows of (artifact, released fingerprint, rebuilt fingerprint, same).

    Run under a temporary SOUPBENCH_CACHE (the CLI does this), so nothing cached is reused.
    """
    reporter = reporter or Reporter()
    if base_recipe_hash(suite) != release.base["recipe_hash"]:
        raise UserError(f"suite {suite.name!r} has base recipe {base_recipe_hash(suite)}, the release was built "
                         f"from {release.base['recipe_hash']}: there is nothing to compare")
    if what == "all":
        base = prepare_base(suite, reporter.progress("pretraining base") if reporter.progress else None,
                            log=reporter.log, use_release=False)
    else:
        base = prepare_base(suite, log=reporter.log, use_release=True)
    rows = [("base", release.base["fingerprint"], base.fingerprint, release.base["fingerprint"] == base.fingerprint)]
    data = skill_training_data(suite)
    for seed in suite.seeds:
        for expert in prepare_experts(suite, base, seed, data, reporter.progress, reporter.log, use_release=False):
            released = next((e for e in release.manifest["experts"]
                             if e["skill"] == expert.name and e["seed"] == seed), None)
            shipped = released["fingerprint"] if released else "(not released)"
            rows.append((f"expert {expert.name} seed {seed}", shipped, expert.fingerprint, shipped == expert.fingerprint))
    return rows

