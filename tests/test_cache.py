"""The self-checking cache: each entry is sealed with its files' sha256 and checked before it is
loaded; a truncated or changed entry is said in one line and rebuilt, never loaded as it is and
never the end of every later run.

The end-to-end cases damage a real entry (the tiny suite's base and experts, built by a real run)
and run the CLI again on a copy of that cache.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from benchmark import cache, merge_cache
from benchmark.base_model import weights_fingerprint
from benchmark.cli import app
from benchmark.hashing import sha256_file
from benchmark.lora import LoraFactors
from benchmark.method import MergeResult
from benchmark.release import reference_db_url

runner = CliRunner()


def write_entry(folder: Path) -> Path:
    """A sealed entry with a safetensors file, a JSON file and a file in a subfolder."""
    folder.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32).reshape(8, 8)}, str(folder / "weights.safetensors"))
    (folder / "config.json").write_text(json.dumps({"r": 4}))
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("built here")
    cache.mark_complete(folder)
    return folder


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def nudge_last_float(path: Path) -> None:
    """Change the lowest mantissa bit of the file's last float32 value: the weights stay finite and
    load as before, only one value differs in its last place (what a careless edit leaves)."""
    data = bytearray(path.read_bytes())
    data[-4] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_seal_records_every_file_and_an_intact_entry_is_usable(tmp_path):
    folder = write_entry(tmp_path / "entry")
    seal = json.loads((folder / cache.MARKER).read_text())
    assert seal["files"] == {name: sha256_file(folder / name)
                             for name in ("config.json", "sub/notes.txt", "weights.safetensors")}
    said: list[str] = []
    assert cache.usable(folder, "thing", said.append) and said == []
    (folder / "reader-side-file.lock").write_text("")  # a file written after the seal does not count
    assert cache.usable(folder, "thing", said.append) and said == []
    assert not cache.usable(tmp_path / "never-built", "thing", said.append) and said == []


@pytest.mark.parametrize("damage, found", [
    (lambda f: truncate(f / "weights.safetensors"), "changed or truncated weights.safetensors"),
    (lambda f: nudge_last_float(f / "weights.safetensors"), "changed or truncated weights.safetensors"),
    (lambda f: (f / "sub" / "notes.txt").write_text("built elsewhere"), "changed or truncated sub/notes.txt"),
    (lambda f: (f / "config.json").unlink(), "lost its file config.json"),
    (lambda f: (f / cache.MARKER).write_text("{not json"), "unreadable seal"),
])
def test_a_damaged_entry_is_said_in_one_line_and_removed_for_a_rebuild(tmp_path, damage, found):
    folder = write_entry(tmp_path / "entry")
    damage(folder)
    said: list[str] = []
    assert not cache.usable(folder, "expert math (seed 0)", said.append)
    assert len(said) == 1 and "\n" not in said[0]
    assert said[0].startswith(f"expert math (seed 0): the cache entry {folder} ") and found in said[0]
    assert said[0].endswith("rebuilding it") and not folder.exists()


def test_an_entry_sealed_by_an_older_soupbench_is_checked_then_sealed_in_full(tmp_path):
    good = write_entry(tmp_path / "good")
    (good / cache.MARKER).write_text("")  # what mark_complete wrote before seals held hashes
    said: list[str] = []
    assert cache.usable(good, "base", said.append) and said == []
    assert set(json.loads((good / cache.MARKER).read_text())["files"]) == {
        "config.json", "sub/notes.txt", "weights.safetensors"}
    nudge_last_float(good / "weights.safetensors")  # from now on a change is found
    assert not cache.usable(good, "base", said.append) and "weights.safetensors" in said[-1]

    for name, damage in (("truncated", lambda f: truncate(f / "weights.safetensors")),
                         ("bad-json", lambda f: (f / "config.json").write_text("{"))):
        old = write_entry(tmp_path / name)
        (old / cache.MARKER).write_text("")
        damage(old)
        said = []
        assert not cache.usable(old, "base", said.append), name
        assert len(said) == 1 and "has a broken" in said[0] and not old.exists()


WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from benchmark import cache
for i in range(int(sys.argv[3])):
    folder = Path(sys.argv[2]) / f"entry-{i}"
    staging = cache.staging_dir(folder)
    for n in range(3):
        (staging / f"part-{n}.bin").write_bytes(bytes([n]) * 200_000)
    cache.publish(staging, folder)
    assert cache.problem(folder) is None, (folder, cache.problem(folder))  # what a reader sees
"""


def test_runners_that_build_the_same_entries_at_once_publish_each_whole_once(tmp_path):
    """Two processes build the same 30 entries at the same time, as two runners on one cache do:
    each sees every entry whole and sealed right after publishing it, and nothing half-built is left."""
    import subprocess
    import sys

    repo = str(Path(__file__).resolve().parent.parent)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, repo, str(tmp_path), "30"]) for _ in range(2)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    entries = sorted(tmp_path.iterdir())
    assert [e.name for e in entries] == sorted(f"entry-{i}" for i in range(30))  # no .partial-* left
    for entry in entries:
        assert cache.problem(entry) is None and sorted(p.name for p in entry.iterdir()) == [
            cache.MARKER, "part-0.bin", "part-1.bin", "part-2.bin"]


def test_an_unsealed_leftover_is_replaced_when_the_entry_is_published(tmp_path):
    folder = tmp_path / "entry"
    folder.mkdir()
    (folder / "half-written.bin").write_bytes(b"\0" * 10)  # a crash of a writer before the seal
    staging = cache.staging_dir(folder)
    (staging / "whole.bin").write_bytes(b"\1" * 10)
    cache.publish(staging, folder, facts={"fingerprint": "sha256:abc"})
    assert sorted(p.name for p in folder.iterdir()) == [cache.MARKER, "whole.bin"] and not staging.exists()
    assert cache.seal_facts(folder) == {"fingerprint": "sha256:abc"}


def test_a_truncated_trained_merge_is_found_before_it_is_loaded(tmp_path):
    folder = tmp_path / "merges" / "key"
    factors = LoraFactors(A=torch.ones(2, 4), B=torch.ones(3, 2), scale=0.5)
    merge_cache.save(folder, MergeResult(deltas={"m": factors}, output_rank=2, info={}), {"merge_seconds": 1.0})
    said: list[str] = []
    assert cache.usable(folder, "cat (seed 0): its trained result", said.append)
    truncate(folder / merge_cache.TENSORS)
    assert not cache.usable(folder, "cat (seed 0): its trained result", said.append)
    assert merge_cache.TENSORS in said[0] and not folder.exists()


def test_the_unpacked_reference_results_are_unpacked_again_when_changed(tmp_path, monkeypatch):
    db = tmp_path / "reference.db"
    with sqlite3.connect(db) as connection:
        connection.execute("create table runs (id integer primary key)")
    connection.close()
    release = tmp_path / "release"
    release.mkdir()
    with db.open("rb") as source, gzip.open(release / "reference.db.gz", "wb") as sink:
        shutil.copyfileobj(source, sink)
    manifest = {"format": 1, "base": {}, "experts": [],
                "reference": {"file": "reference.db.gz", "sha256": sha256_file(release / "reference.db.gz")}}
    (release / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("SOUPBENCH_RELEASE", str(release))
    unpacked = Path(reference_db_url().removeprefix("sqlite:///"))
    assert unpacked.read_bytes() == db.read_bytes()
    truncate(unpacked)
    said: list[str] = []
    assert reference_db_url(log=said.append) == f"sqlite:///{unpacked}"
    assert len(said) == 1 and "reference results" in said[0] and unpacked.read_bytes() == db.read_bytes()


# ------------------------------------------------------------------ end to end, on a real cache


def stored(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute("select method, task, seed, status, base_fingerprint, expert_fingerprints "
                                  "from runs").fetchall()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A database made by a real run (base, then both experts of seed 0) in the session's cache
    (shared with the other end-to-end tests, which build the same tiny base); tests damage copies."""
    import yaml

    from tests.conftest import TINY_SUITE

    root = tmp_path_factory.mktemp("built")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY_SUITE))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOUPBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))  # as isolated_cache
        result = runner.invoke(app, ["run", "--suite", str(root / "tiny.yaml"), "--method", "base",
                                     "--task", "math", "--db", str(root / "runs.db")])
    assert result.exit_code == 0, result.output
    for kind in ("base", "experts"):
        shutil.copytree(tmp_path_factory.getbasetemp() / "cache" / kind, root / "cache" / kind)
    return root


def entry_file(cache_root: Path, kind: str, name: str, db: Path) -> Path:
    """The file `name` of the entry of `kind` that the stored run used: the base, or the math expert
    of seed 0, found by the cache keys the runner computes (the cache may hold other suites' entries)."""
    from benchmark.base_model import default_device
    from benchmark.keys import base_build_key, base_recipe_hash, expert_key
    from benchmark.experts import skill_training_data
    from benchmark.suite import Suite
    from tests.conftest import TINY_SUITE

    suite = Suite.model_validate(TINY_SUITE)
    if kind == "base":
        return cache_root / "base" / base_build_key(base_recipe_hash(suite), default_device()) / name
    base_fingerprint = stored(db)[0][4]
    key = expert_key(suite, base_fingerprint, "math", 0, skill_training_data(suite)["math"])
    return cache_root / "experts" / key / name


@pytest.mark.parametrize("kind, name, damage", [
    ("experts", "adapter_model.safetensors", truncate),
    ("experts", "adapter_model.safetensors", nudge_last_float),
    ("base", "model.safetensors", truncate),
    ("base", "model.safetensors", nudge_last_float),
])
def test_a_damaged_cache_entry_is_rebuilt_and_stored_fingerprints_stay_one_per_artifact(
        built, tmp_path, monkeypatch, kind, name, damage):
    shutil.copytree(built / "cache", tmp_path / "cache")
    shutil.copy(built / "runs.db", tmp_path / "runs.db")
    monkeypatch.setenv("SOUPBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "1000")  # the log line unwrapped, as a script reading it sees it
    victim = entry_file(tmp_path / "cache", kind, name, tmp_path / "runs.db")
    assert victim.is_file()
    damage(victim)
    if damage is nudge_last_float:  # still loads, and loads to other (finite) weights
        assert all(torch.isfinite(t).all() for t in load_file(str(victim)).values())

    # even --method base needs the base and the experts (their fingerprints are part of its row)
    result = runner.invoke(app, ["run", "--suite", str(built / "tiny.yaml"), "--method", "base",
                                 "--task", "code", "--db", str(tmp_path / "runs.db")])
    assert result.exit_code == 0, result.output
    said = result.output
    assert f"the cache entry {victim.parent} has a changed or truncated {name}" in said
    assert "rebuilding it" in said and "Traceback" not in result.output
    rows = stored(tmp_path / "runs.db")
    assert sorted((r[0], r[1], r[2], r[3]) for r in rows) == [("base", "code", 0, "ok"), ("base", "math", 0, "ok")]
    assert len({r[4] for r in rows}) == 1  # one base fingerprint
    for skill in ("math", "code"):  # one fingerprint per expert and seed
        assert len({json.loads(r[5])[skill] for r in rows}) == 1, skill
    assert cache.problem(victim.parent) is None  # the rebuilt entry is sealed: the next run loads it
    if kind == "base":  # the fingerprint a load takes from the seal is the files' own
        assert cache.seal_facts(victim.parent)["fingerprint"] == weights_fingerprint(victim.parent) == rows[0][4]
