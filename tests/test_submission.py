"""Submitting a method end to end on a tiny release: the worked example (examples/norm_balanced)
through submit, import, verify (with a hidden seed) and export; every kind of tampering refused by
name with nothing written; a duplicate import refused; import all or nothing; the typed RunSpec
stored with each row and a row re-run from its spec alone."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchmark.bundle import BundleError, Submitter, read_bundle
from benchmark.cli import app
from benchmark.contract import PluginContractError
from benchmark.method import ModuleWiseMethod
from benchmark.run_spec import RunSpec
from benchmark.storage import AlreadyImportedError, open_store
from benchmark.submission import (
    export_bundles, hidden_seed_value, import_bundle, preflight, stored_records, submit, verify_bundle,
)
from benchmark.suite import Suite
from benchmark.errors import UserError
from tests.conftest import TINY_SUITE, build_tiny_release

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "norm_balanced" / "norm_balanced.py"
SECRET = "keeper-secret-0123456789abcdef"
WHO = Submitter(name="Ada Example", contact="ada@example.org")
cli = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    return build_tiny_release(tmp_path_factory.mktemp("submission-release"), ["base", "task_arithmetic"])


@pytest.fixture(scope="module")
def bundle_file(released, tmp_path_factory) -> Path:
    """The worked example submitted on the tiny release (every task, both seeds)."""
    root = tmp_path_factory.mktemp("submitted")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOUPBENCH_CACHE", str(root / "cache"))
        patch.setenv("SOUPBENCH_RELEASE", str(released))
        submit(EXAMPLE, Suite.model_validate(TINY_SUITE), root / "norm.soup.zip", WHO, log=lambda m: None)
    return root / "norm.soup.zip"


@pytest.fixture
def keeper(tmp_path, monkeypatch, released):
    """The keeper's side: the release in place, an empty cache, an empty database."""
    monkeypatch.setenv("SOUPBENCH_CACHE", str(tmp_path / "keeper-cache"))
    monkeypatch.setenv("SOUPBENCH_RELEASE", str(released))
    store = open_store(f"sqlite:///{tmp_path / 'board.db'}")
    yield store
    store.close()


def rows(store, query: str) -> list[tuple]:
    with sqlite3.connect(store.engine.url.database) as connection:
        return connection.execute(query).fetchall()


def rewrite(source: Path, target: Path, change) -> Path:
    """A copy of a bundle with `change(members)` applied to its members (name -> bytes)."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    change(members)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    target.write_bytes(buffer.getvalue())
    return target


def edit_manifest(edit):
    def change(members):
        manifest = json.loads(members["bundle.json"])
        edit(manifest)
        members["bundle.json"] = json.dumps(manifest).encode()
    return change


# ------------------------------------------------------------------------------------------- tests


def test_the_bundle_carries_source_runs_samples_release_hashes_and_submitter(bundle_file, released):
    bundle = read_bundle(bundle_file)
    manifest = bundle.manifest
    assert manifest.submitter == WHO and manifest.method.name == "norm_balanced"
    assert bundle.source == EXAMPLE.read_text()
    assert sorted((r.spec.task, r.spec.seed) for r in manifest.runs) == sorted(
        (t, s) for t in TINY_SUITE["tasks"] for s in TINY_SUITE["seeds"])
    release = json.loads((released / "manifest.json").read_text())
    assert {r.base_fingerprint for r in manifest.runs} == {release["base"]["fingerprint"]}
    run = manifest.runs[0]
    assert run.spec.card.family == "linear" and run.spec.card.source_sha256 == manifest.method.source_sha256
    assert run.spec.experts and run.spec.method_class.endswith("NormBalanced")
    assert all(len(samples) == 6 and samples[0].generation is not None for samples in bundle.samples)
    assert manifest.environment["packages"]["torch"]


def test_import_adds_every_run_with_its_submission_and_refuses_a_duplicate(bundle_file, keeper):
    bundle, submission = import_bundle(bundle_file, keeper)
    assert keeper.count_runs() == len(bundle.manifest.runs) == 6
    assert rows(keeper, "select submitter, contact, state, method_source_sha256 from submissions") == [
        ("Ada Example", "ada@example.org", "imported", bundle.manifest.method.source_sha256)]
    assert rows(keeper, "select count(*) from submission_runs where submission_id = %d" % submission) == [(6,)]
    with pytest.raises(AlreadyImportedError, match="already imported"):
        import_bundle(bundle_file, keeper)
    assert keeper.count_runs() == 6


@pytest.mark.parametrize("what, change, message", [
    ("a score", edit_manifest(lambda m: m["runs"][1]["scores"][0].update(value=m["runs"][1]["scores"][0]["value"] + 1 / 6)),
     "does not follow from its samples"),
    ("a sample", lambda members: members.update({"samples/2.jsonl": members["samples/2.jsonl"].replace(
        b'"generation":"', b'"generation":"x', 1)}), "samples of run"),
    ("the base hash", edit_manifest(lambda m: [r.update(base_fingerprint="0" * 64) for r in m["runs"]]),
     "the release's base is"),
    ("an expert hash", edit_manifest(lambda m: m["runs"][3]["expert_fingerprints"].update(math="1" * 64)),
     "the release's expert math"),
    ("the method source", lambda members: members.update({
        name: data + b"\n# edited\n" for name, data in members.items() if name.startswith("method/")}),
     "the method's source"),
])
def test_a_tampered_bundle_is_refused_by_name_and_nothing_is_written(bundle_file, keeper, tmp_path, what, change,
                                                                       message):
    tampered = rewrite(bundle_file, tmp_path / "tampered.soup.zip", change)
    with pytest.raises(BundleError, match=message):
        import_bundle(tampered, keeper)
    assert keeper.count_runs() == 0 and rows(keeper, "select count(*) from submissions") == [(0,)]


def test_a_sample_changed_consistently_is_caught_by_rescoring_it(bundle_file, keeper, tmp_path):
    """A submitter who flips a sample's `correct` and rewrites its hash: its generation does not earn it."""
    import hashlib

    def flip(members):
        manifest = json.loads(members["bundle.json"])
        lines = members["samples/0.jsonl"].decode().splitlines()
        sample = json.loads(lines[0])
        sample["correct"] = not sample["correct"]
        lines[0] = json.dumps(sample, sort_keys=True, separators=(",", ":"))
        members["samples/0.jsonl"] = ("\n".join(lines) + "\n").encode()
        manifest["runs"][0]["samples_sha256"] = hashlib.sha256(members["samples/0.jsonl"]).hexdigest()
        members["bundle.json"] = json.dumps(manifest).encode()

    with pytest.raises(BundleError, match="sample 0 is stored as correct="):
        import_bundle(rewrite(bundle_file, tmp_path / "flipped.soup.zip", flip), keeper)
    assert keeper.count_runs() == 0


def test_a_source_swapped_with_its_hash_is_refused_against_the_runs_cards(bundle_file, keeper, tmp_path):
    import hashlib

    def swap(members):
        manifest = json.loads(members["bundle.json"])
        name = f"method/{manifest['method']['file']}"
        members[name] = members[name].replace(b"scale: float = 1.0", b"scale: float = 1.5")
        manifest["method"]["source_sha256"] = hashlib.sha256(members[name]).hexdigest()
        members["bundle.json"] = json.dumps(manifest).encode()

    with pytest.raises(BundleError, match="the source was changed"):
        import_bundle(rewrite(bundle_file, tmp_path / "swapped.soup.zip", swap), keeper)


def test_an_incomplete_bundle_is_refused(bundle_file, keeper, tmp_path):
    def drop_seed(members):
        manifest = json.loads(members["bundle.json"])
        manifest["runs"] = [r for r in manifest["runs"] if r["spec"]["seed"] == 0]
        members["bundle.json"] = json.dumps(manifest).encode()

    with pytest.raises(BundleError, match="lacks 3 cells"):
        import_bundle(rewrite(bundle_file, tmp_path / "half.soup.zip", drop_seed), keeper)


def test_import_is_all_or_nothing_when_one_cell_is_already_stored(bundle_file, keeper, tmp_path):
    bundle = read_bundle(bundle_file)
    keeper.save_runs([bundle.records()[-1]])  # the last cell of the bundle, stored by someone else
    with pytest.raises(AlreadyImportedError, match="already stored"):
        import_bundle(bundle_file, keeper)
    assert keeper.count_runs() == 1 and rows(keeper, "select count(*) from submissions") == [(0,)]
    assert rows(keeper, "select count(*) from submission_runs") == [(0,)]


def test_verify_reproduces_every_sample_and_stores_the_hidden_set_scores(bundle_file, keeper):
    import_bundle(bundle_file, keeper)
    found = verify_bundle(bundle_file, keeper, hidden_secret=SECRET, threads=1)
    assert found.compared == 36 and found.reproduced == 36 and found.state == "reproduced"
    _, label = hidden_seed_value(SECRET)
    assert found.hidden_set == label and SECRET not in json.dumps(rows(keeper, "select * from submissions"))
    assert sorted(found.hidden) == sorted((t, s) for t in TINY_SUITE["tasks"] for s in TINY_SUITE["seeds"])
    stored = rows(keeper, "select r.task, r.seed, h.value from hidden_scores h join runs r on r.id = h.run_id "
                          "where h.\"primary\" = 1")
    assert {(t, s): v for t, s, v in stored} == found.hidden
    assert rows(keeper, "select distinct hidden_set from hidden_scores") == [(label,)]
    assert rows(keeper, "select state, reproduced_samples, compared_samples from submissions") == [
        ("reproduced", 36, 36)]
    assert 0.0 <= found.hidden_overlap < 0.5  # a fresh draw of documents, not the public ones


def test_verify_tells_a_bundle_whose_generations_its_source_does_not_give(bundle_file, keeper, tmp_path):
    """Generations rewritten (with their scores still following): the re-run does not reproduce them."""
    import hashlib

    def rewrite_generation(members):
        manifest = json.loads(members["bundle.json"])
        for index, run in enumerate(manifest["runs"]):
            if run["spec"]["task"] != "math":
                continue
            name = run["samples_file"]
            lines = [json.loads(line) for line in members[name].decode().splitlines()]
            for sample in lines:
                sample["generation"] = sample["generation"] + " "  # scores the same, is not what ran
            members[name] = "".join(json.dumps(s, sort_keys=True, separators=(",", ":")) + "\n"
                                    for s in lines).encode()
            run["samples_sha256"] = hashlib.sha256(members[name]).hexdigest()
        members["bundle.json"] = json.dumps(manifest).encode()

    forged = rewrite(bundle_file, tmp_path / "forged.soup.zip", rewrite_generation)
    import_bundle(forged, keeper)
    found = verify_bundle(forged, keeper, threads=1)
    assert found.compared == 36 and found.reproduced == 24 and found.state == "not_reproduced"
    assert all(found.per_run[cell] == (0, 6) for cell in found.per_run if ", math," in cell)


def test_a_short_hidden_seed_is_refused():
    with pytest.raises(UserError, match="at least 16 characters"):
        hidden_seed_value("1234")


def test_export_writes_bundles_that_import_elsewhere(bundle_file, keeper, tmp_path, released):
    import_bundle(bundle_file, keeper)
    written = export_bundles(keeper.url, "tiny", tmp_path / "out", None, Submitter(name="x", contact="y"))
    assert [method for method, *_ in written] == ["norm_balanced"]
    again = read_bundle(written[0][1])
    assert again.manifest.submitter == WHO and again.source == EXAMPLE.read_text()  # the submission's own
    other = open_store(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        import_bundle(written[0][1], other)
        assert other.count_runs() == 6
    finally:
        other.close()
    reference = f"sqlite:///{tmp_path / 'reference.db'}"  # built-in rows: bundled with the installed source
    shutil.copy(Path(_reference_db(released)), tmp_path / "reference.db")
    built_in = export_bundles(reference, "tiny", tmp_path / "builtin", ["task_arithmetic"], Submitter(name="SoupBench",
                                                                                                     contact="z"))
    assert read_bundle(built_in[0][1]).manifest.method.class_path == "methods.task_arithmetic.TaskArithmetic"


def _reference_db(released: Path) -> str:
    from benchmark.release import reference_db_url

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOUPBENCH_RELEASE", str(released))
        return reference_db_url().removeprefix("sqlite:///")


def test_the_cli_takes_the_worked_example_from_submit_to_a_verified_row(released, tmp_path, monkeypatch):
    monkeypatch.setenv("SOUPBENCH_RELEASE", str(released))
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(json.dumps(TINY_SUITE))
    bundle, db = tmp_path / "cli.soup.zip", tmp_path / "cli.db"
    done = cli.invoke(app, ["submit", str(EXAMPLE), "--name", "Ada", "--contact", "a@b.c", "--out", str(bundle),
                            "--suite", str(suite_file)])
    assert done.exit_code == 0, done.output
    assert "pre-flight" in done.output and "bundle written" in " ".join(done.output.split())
    done = cli.invoke(app, ["import", str(bundle), "--db", str(db)])
    assert done.exit_code == 0, done.output
    done = cli.invoke(app, ["import", str(bundle), "--db", str(db)])
    assert done.exit_code == 2 and "already imported" in done.output
    done = cli.invoke(app, ["verify", str(bundle), "--db", str(db), "--threads", "1"],
                      env={"SOUPBENCH_HIDDEN_SEED": SECRET})
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "36 of 36 per-sample outputs reproduced (100.0%)" in said and "stored as reproduced" in said
    with sqlite3.connect(db) as connection:
        assert connection.execute("select count(*) from hidden_scores where \"primary\" = 1").fetchone() == (6,)


class NaNMerge(ModuleWiseMethod):
    name = "nan_merge"

    def merge_module(self, deltas, generator):
        return torch.full_like(deltas[0], float("nan"))


class WrongShape(ModuleWiseMethod):
    name = "wrong_shape"

    def merge_module(self, deltas, generator):
        return deltas[0].T.contiguous() if deltas[0].shape[0] != deltas[0].shape[1] else deltas[0]


def test_preflight_names_a_broken_method_before_any_compute():
    with pytest.raises(PluginContractError, match="NaN values"):
        preflight(NaNMerge())
    with pytest.raises(PluginContractError, match="changed the shape"):
        preflight(WrongShape())
    from methods.cat import Cat
    from methods.ties import Ties

    assert "merged two random experts" in preflight(Ties())
    assert "checked on the real experts" in preflight(Cat())


def test_a_row_is_rerun_from_its_stored_spec_alone(bundle_file, keeper, tmp_path):
    """The typed spec each row stores is enough to recompute it: same samples."""
    from benchmark import catalog
    from benchmark.runner import rerun_spec

    import_bundle(bundle_file, keeper)
    catalog.load_method_file(EXAMPLE)  # the method must be runnable here (the bundle's source)
    record = next(r for r in stored_records(keeper.engine, "tiny", "norm_balanced") if r.seed == 1 and r.task == "code")
    spec = RunSpec.from_stored(record.spec)
    assert spec is not None and spec.task == "code" and spec.seed == 1 and set(spec.tasks) == set(TINY_SUITE["tasks"])
    other = open_store(f"sqlite:///{tmp_path / 'rerun.db'}")
    try:
        rerun_spec(spec, other)
        again = next(r for r in stored_records(other.engine, "tiny", "norm_balanced") if r.seed == 1 and r.task == "code")
    finally:
        other.close()
    assert [s.generation for s in again.samples] == [s.generation for s in record.samples]
    assert RunSpec.from_stored(again.spec) == spec


def _program_samples(tmp_path):
    """The tiny suite's `code` documents with their reference programs as generations, each recorded
    as having run in time and printed the answer; and the data folder they come from."""
    from benchmark.evaluation import write_task_data
    from benchmark.storage import SampleRecord
    from tasks._common.dataset import data_file

    suite = Suite.model_validate(TINY_SUITE)
    write_task_data(["code"], tmp_path, 6, suite.data_seed, suite.task_options)
    docs = [json.loads(line) for line in data_file(tmp_path, "code").read_text().splitlines()]
    return suite, [SampleRecord(i, doc["prompt"], doc["target"], doc["target"], str(doc["answer"]), True,
                                {"returncode": 0, "timed_out": False, "value": doc["answer"], "error": None})
                   for i, doc in enumerate(docs)]


def test_rescoring_keeps_a_recorded_timeout_a_failure_though_the_program_finishes_now(tmp_path):
    """A time limit is wall-clock time: a program that timed out on a loaded machine may finish when
    run again. Its recorded failure stands (a legitimate bundle is not refused for the clock)."""
    from dataclasses import replace

    from benchmark.evaluation import rescore

    suite, samples = _program_samples(tmp_path)
    samples[0] = replace(samples[0], correct=False, executed="timed out",
                         extra={"returncode": None, "timed_out": True, "value": None, "error": "timed out"})
    scores = {s.metric: s.value for s in rescore("code", samples, tmp_path, suite.eval)}
    assert scores == {"exec_accuracy": 5 / 6, "program_ran": 5 / 6}


def test_rescoring_never_passes_off_a_program_that_loops_as_one_that_printed_the_answer(tmp_path):
    from dataclasses import replace

    from benchmark.evaluation import SamplesMismatchError, rescore

    suite, samples = _program_samples(tmp_path)
    samples[2] = replace(samples[2], generation="while True:\n    pass")
    quick = suite.eval.model_copy(update={"sandbox_timeout_s": 0.5})
    with pytest.raises(SamplesMismatchError, match="sample 2 is stored as correct=True"):
        rescore("code", samples, tmp_path, quick)
