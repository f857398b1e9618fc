"""A release end to end on the tiny suite: built by `build_release`, used by `soupbench run` with an
empty cache (no pretraining, no expert training, the reference scores reproduced), refused when a
byte changes, bypassed by another recipe, rebuilt bit for bit, shown by the leaderboard."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.experts import skill_training_data
from benchmark.keys import base_recipe_hash, expert_key
from benchmark.hashing import sha256_file
from benchmark.release import ReleaseIntegrityError, load_release, reference_db_url
from benchmark.release_build import check_rebuild
from benchmark.suite import Suite
from tests.conftest import TINY_SUITE, build_tiny_release

runner = CliRunner()
METHODS = ["base", "expert-math", "task_arithmetic", "cat"]


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    return build_tiny_release(tmp_path_factory.mktemp("release"), METHODS)


@pytest.fixture
def fresh(tmp_path, monkeypatch, released):
    """An empty cache and the tiny release in place, as a new user has them."""
    monkeypatch.setenv("SOUPBENCH_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("SOUPBENCH_RELEASE", str(released))
    monkeypatch.setenv("SOUPBENCH_DEVICE", "cpu")
    return tmp_path


def reference_db(release: Path) -> Path:
    """The release's reference results, unpacked (what the leaderboard reads)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOUPBENCH_RELEASE", str(release))
        return Path(reference_db_url().removeprefix("sqlite:///"))


def rows(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def test_manifest_names_every_file_and_the_recipe_hashes_it_was_built_from(released):
    manifest = json.loads((released / "manifest.json").read_text())
    suite = Suite.model_validate(TINY_SUITE)
    assert manifest["base"]["recipe_hash"] == base_recipe_hash(suite)
    data = skill_training_data(suite)
    assert sorted((e["skill"], e["seed"]) for e in manifest["experts"]) == [
        (skill, seed) for skill in ("code", "math") for seed in (0, 1)]
    for entry in manifest["experts"]:
        assert entry["recipe_hash"] == expert_key(suite, manifest["base"]["fingerprint"], entry["skill"],
                                                  entry["seed"], data[entry["skill"]])
    named = dict(manifest["base"]["files"])
    for entry in manifest["experts"] + manifest["merges"]:
        named.update(entry["files"])
    assert sorted((m["method"], m["seed"]) for m in manifest["merges"]) == [("cat", 0), ("cat", 1)]
    named[manifest["reference"]["file"]] = manifest["reference"]["sha256"]
    on_disk = {p.relative_to(released).as_posix() for p in released.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(named) == on_disk
    assert all(sha256_file(released / name) == digest for name, digest in named.items())
    assert "model.safetensors" in {Path(n).name for n in manifest["base"]["files"]}
    assert manifest["provenance"]["packages"]["torch"] and manifest["base"]["build_log"]["steps"] == "20"
    cells = rows(reference_db(released), "select method, task, seed, status, base_fingerprint from runs")
    assert sorted(c[:4] for c in cells) == sorted(
        (m, t, s, "ok") for m in METHODS for t in TINY_SUITE["tasks"] for s in (0, 1))
    assert {c[4] for c in cells} == {manifest["base"]["fingerprint"]}


def test_a_run_on_the_release_trains_nothing_and_reproduces_the_reference(fresh, tiny_suite_file, released):
    db = fresh / "mine.db"
    result = runner.invoke(app, ["run", "--suite", str(tiny_suite_file), "--method", "task_arithmetic",
                                 "--method", "cat", "--seeds", "2", "--db", str(db)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "base from the release" in said and "expert math (seed 1) from the release" in said
    cache = fresh / "empty-cache"
    assert not (cache / "base").exists() and not (cache / "experts").exists()  # nothing was trained
    manifest = json.loads((released / "manifest.json").read_text())
    query = ("select r.task, r.seed, r.base_fingerprint, r.expert_fingerprints, s.value from runs r "
             "join scores s on s.run_id = r.id where r.method = 'task_arithmetic' order by r.task, r.seed, s.metric")
    mine, reference = rows(db, query), rows(reference_db(released), query)
    assert mine == reference  # the same weights give the same scores, metric by metric
    # CAT's trained result comes from the release, with the cost it had when the release computed it
    assert "cat (seed 1): its trained result comes from" in said and not (cache / "merges").exists()
    cat = ("select r.task, r.seed, r.merge_seconds, s.value, json_extract(r.provenance, '$.merge_result.reused'), "
           "json_extract(r.provenance, '$.merge_result.merge_seconds') "
           "from runs r join scores s on s.run_id = r.id where r.method = 'cat' order by r.task, r.seed, s.metric")
    mine_cat, reference_cat = rows(db, cat), rows(reference_db(released), cat)
    assert [(r[0], r[1], r[3]) for r in mine_cat] == [(r[0], r[1], r[3]) for r in reference_cat]
    assert all(m[2] >= m[5] > 0 and abs(m[2] - r[2]) < 1.0 for m, r in zip(mine_cat, reference_cat))
    assert {r[4] for r in mine_cat} == {1} and {r[4] for r in reference_cat} == {0}
    assert {row[2] for row in mine} == {manifest["base"]["fingerprint"]}
    assert json.loads(mine[0][3]) == {e["skill"]: e["fingerprint"] for e in manifest["experts"]
                                      if e["seed"] == mine[0][1]}


def test_a_changed_byte_in_any_released_file_is_refused_and_nothing_is_stored(fresh, tiny_suite_file, released,
                                                                                monkeypatch):
    copy = fresh / "release-copy"
    shutil.copytree(released, copy)
    target = copy / "experts" / "seed-1" / "code" / "adapter_model.safetensors"  # not even the seed we run
    before = sha256_file(target)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    monkeypatch.setenv("SOUPBENCH_RELEASE", str(copy))
    db = fresh / "mine.db"
    result = runner.invoke(app, ["run", "--suite", str(tiny_suite_file), "--method", "base", "--db", str(db)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert str(target) in message and before in message and sha256_file(target) in message
    assert "soupbench release micro" in message
    assert rows(db, "select count(*) from runs") == [(0,)]
    assert not (fresh / "empty-cache" / "base").exists()  # nor was anything built instead


def test_a_suite_with_another_recipe_builds_its_own_base_after_saying_so(fresh, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**TINY_SUITE, "base": {**TINY_SUITE["base"], "steps": 19}}))
    result = runner.invoke(app, ["run", "--suite", str(other), "--method", "base", "--task", "math",
                                 "--db", str(tmp_path / "other.db")])
    assert result.exit_code == 0, result.output
    assert "no released base for this recipe" in result.output and "pretraining it here" in result.output
    assert any((fresh / "empty-cache" / "base").iterdir())


def test_a_rebuild_in_an_empty_cache_reproduces_the_release_bit_for_bit(fresh, released):
    rows_ = check_rebuild(Suite.model_validate(TINY_SUITE), load_release(released), "all")
    assert [name for name, *_ in rows_] == ["base"] + [f"expert {s} seed {n}" for n in (0, 1) for s in ("math", "code")]
    assert all(same for *_, same in rows_), rows_


def test_a_release_manifest_that_is_not_json_is_a_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ReleaseIntegrityError, match="not valid JSON"):
        load_release(tmp_path)


def test_the_release_command_reports_a_rebuild_artifact_by_artifact(fresh, tiny_suite_file, released):
    result = runner.invoke(app, ["release", str(tiny_suite_file), "--out", str(released), "--check", "experts"])
    assert result.exit_code == 0, result.output
    assert "5 of 5 artifacts reproduced bit for bit on this machine" in " ".join(result.output.split())
    assert not (fresh / "empty-cache" / "experts").exists()  # rebuilt in a scratch cache, not the user's


def test_the_release_command_builds_a_release_that_a_run_then_uses(fresh, tiny_suite_file, tmp_path, monkeypatch):
    out = tmp_path / "built"
    monkeypatch.setenv("SOUPBENCH_CACHE", str(tmp_path / "release-cache"))
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({**TINY_SUITE, "seeds": [0], "tasks": ["math"]}))
    result = runner.invoke(app, ["release", str(small), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(e["skill"], e["seed"]) for e in manifest["experts"]] == [("math", 0), ("code", 0)]
    assert manifest["reference"]["cells"] == len(rows(reference_db(out), "select id from runs")) > 0
    staged = tmp_path / "release-cache" / "release-staging"
    assert not (tmp_path / ".built.incoming").exists() and not any(staged.glob("*"))


def test_the_base_recipe_hash_covers_the_generated_corpus_not_only_version_numbers(monkeypatch):
    from benchmark.micro import corpus

    suite = Suite.model_validate(TINY_SUITE)
    before = base_recipe_hash(suite)
    maker, weight = corpus.DOCUMENT_KINDS["copy_list"]
    monkeypatch.setitem(corpus.DOCUMENT_KINDS, "copy_list", (lambda rng: maker(rng) + " Done.", weight))
    assert base_recipe_hash(suite) != before  # an edited document maker, no version bumped
    monkeypatch.setitem(corpus.DOCUMENT_KINDS, "copy_list", (maker, weight))
    assert base_recipe_hash(suite) == before
