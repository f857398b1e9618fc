"""Submitting a method: `submit` (run the grid, write a bundle), `import_bundle` (check it, add it to
a database, all or nothing), `export_bundles` (bundles from stored rows) and `verify_bundle` (the
keeper re-runs the source on the released weights, and scores it on a hidden set).

The open leaderboards this copies from: the Open LLM Leaderboard re-evaluates every submission on
pinned weights and publishes per-sample details; the LLM Merging Competition ranked on a hidden
test set. A synthetic suite can do both cheaply: its documents are drawn from a seed, so a keeper's
secret seed gives a fresh test set nobody has seen (`hidden_seed_value`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, selectinload

from benchmark import catalog
from benchmark.bundle import Bundle, BundleError, Submitter, check_bundle, read_bundle, write_bundle
from benchmark.contract import PluginContractError, check_merge_result, describe_method
from benchmark.errors import UserError
from benchmark.lora import Expert, LoraFactors
from benchmark.method import Consumes, MergeContext, MergeMethod
from benchmark.run_spec import method_source_sha256
from benchmark.storage import (
    AlreadyImportedError, Run, RunRecord, SampleRecord, ScoreRecord, Store, Submission, SubmissionRecord, SubmissionRun,
    has_submission_tables, open_store, params_key,
)
from benchmark.suite import Suite

HIDDEN_SEED_ENV = "SOUPBENCH_HIDDEN_SEED"
MIN_HIDDEN_SEED_CHARS = 16


# ------------------------------------------------------------------------------------ pre-flight


def preflight(method: MergeMethod) -> str:
    """Check a method's contract on two small random experts before any compute is spent; raise a
    `PluginContractError` naming the problem, or return what was checked.

    A method that consumes nothing is merged on two random experts that share one module and each
    have one of their own (a module an expert lacks arrives as zeros): no NaN or inf, every delta the
    shape of its module, each module once. A method that trains or reads data needs the base and its
    trainer, so only its parameters are checked here; the grid checks the rest as it runs.
    """
    if method.consumes is not Consumes.NOTHING:
        return (f"parameters of {describe_method(method)} valid; it consumes {method.consumes.value}, so its merge "
                "is checked on the real experts as the grid runs")
    generator = torch.Generator().manual_seed(0)

    def factors(out: int, inp: int, rank: int = 4) -> LoraFactors:
        return LoraFactors(torch.randn(rank, inp, generator=generator), torch.randn(out, rank, generator=generator), 2.0)

    shared = "model.layers.0.self_attn.q_proj"
    experts = [Expert("first", {shared: factors(16, 16), "model.layers.0.mlp.down_proj": factors(16, 32)}),
               Expert("second", {shared: factors(16, 16), "model.layers.0.mlp.up_proj": factors(32, 16)})]
    shapes = {shared: (16, 16), "model.layers.0.mlp.down_proj": (16, 32), "model.layers.0.mlp.up_proj": (32, 16)}
    try:
        result = method.merge(experts, MergeContext(seed=0, skills=[e.name for e in experts]))
        checked = check_merge_result(method, result, shapes)
        merged = [module for module, _ in checked.items()]
    except PluginContractError:
        raise
    except Exception as err:
        raise PluginContractError(f"method {describe_method(method)} failed on two small random experts: "
                                  f"{type(err).__name__}: {err}") from err
    if not merged:
        raise PluginContractError(f"method {describe_method(method)} returned no deltas for two random experts")
    return f"{describe_method(method)} merged two random experts: {len(merged)} modules, finite, shapes kept"


# ----------------------------------------------------------------------------------------- submit


def method_from_file(path: Path, name: str | None) -> type[MergeMethod]:
    """The method class of a user file (the one it defines, or the one named `name`)."""
    found = catalog.load_method_file(path)
    if name is None:
        if len(found) > 1:
            raise UserError(f"method file {path} defines {len(found)} methods ({', '.join(c.name for c in found)}); "
                            "say which with --method")
        return found[0]
    chosen = [cls for cls in found if cls.name == name]
    if not chosen:
        raise UserError(f"method file {path} defines no method {name!r} (it defines "
                        f"{', '.join(c.name for c in found)})")
    return chosen[0]


def released_suite_check(suite: Suite) -> None:
    """Refuse a suite that has no release here: a submission is run on released weights only."""
    from benchmark.keys import base_recipe_hash
    from benchmark.release import load_release, release_dir

    release = load_release()
    if release is None:
        raise UserError(f"no release at {release_dir()}: a submission runs on a released base and experts")
    if base_recipe_hash(suite) != release.base["recipe_hash"]:
        raise UserError(f"suite {suite.name!r} is not the released suite ({release.manifest.get('suite')!r}): its "
                        "base recipe differs, so it would pretrain a base of its own; submit on the released suite")


def submit(method_file: Path, suite: Suite, out: Path, submitter: Submitter, method_name: str | None = None,
           seeds: list[int] | None = None, reporter=None, log: Callable[[str], None] = print) -> str:
    """Run `method_file`'s method on every task and seed of the released suite and write its bundle;
    return the bundle's sha256. The grid runs into a scratch database: nothing is stored elsewhere."""
    from benchmark.runner import check_names, run_grid
    from benchmark.storage import collect_provenance

    cls = method_from_file(method_file, method_name)
    method = catalog.create_method(cls.name, suite.method_params.get(cls.name, {}), suite.skill_names)
    log(f"pre-flight: {preflight(method)}")
    released_suite_check(suite)
    check_names(suite, [cls.name])
    seeds = list(suite.seeds) if seeds is None else seeds
    with tempfile.TemporaryDirectory(prefix="soupbench-submit-") as scratch:
        store = open_store(f"sqlite:///{Path(scratch) / 'submit.db'}")
        try:
            summary = run_grid(suite, store, methods=[cls.name], seeds=seeds, reporter=reporter)
            if summary.failed:
                label, seed, error = summary.failed[0]
                raise UserError(f"{label} failed on seed {seed}: {error}; no bundle was written")
            records = stored_records(store.engine, suite.name, cls.name)
        finally:
            store.close()
    source = Path(method_file).read_text(encoding="utf-8")
    return write_bundle(out, records, source, Path(method_file).name, f"{cls.__module__}.{cls.__qualname__}",
                        submitter, collect_provenance())


def stored_records(engine: Engine, suite: str, method: str, key: str | None = None) -> list[RunRecord]:
    """Every ok run of (suite, method[, params key]) with its scores and samples, as records."""
    query = (select(Run).where(Run.suite == suite, Run.method == method, Run.status == "ok")
             .options(selectinload(Run.scores), selectinload(Run.samples)).order_by(Run.seed, Run.task))
    if key is not None:
        query = query.where(Run.params_key == key)
    with Session(engine) as session:
        return [RunRecord(
            suite=run.suite, method=run.method, method_params=run.method_params, task=run.task, seed=run.seed,
            scores=[ScoreRecord(s.metric, s.value, s.stderr, s.n_samples, s.primary) for s in run.scores],
            samples=sorted((SampleRecord(s.doc_index, s.prompt, s.generation, s.target, s.executed, s.correct,
                                         s.extra) for s in run.samples), key=lambda s: s.doc_index),
            merge_seconds=run.merge_seconds, eval_seconds=run.eval_seconds, peak_memory_mb=run.peak_memory_mb,
            output_rank=run.output_rank, consumes=run.consumes, n_target_examples=run.n_target_examples,
            base_fingerprint=run.base_fingerprint, expert_fingerprints=run.expert_fingerprints,
            provenance=run.provenance, spec=run.spec) for run in session.scalars(query)]


# ----------------------------------------------------------------------------------------- import


def check(bundle: Bundle, release_root: Path | None = None) -> None:
    """`benchmark.bundle.check_bundle` against the release here (or at `release_root`), every score
    recomputed from the samples on the suite's own documents."""
    from benchmark.evaluation import SamplesMismatchError, rescore
    from benchmark.release import load_release
    from benchmark.pool import task_data_dir

    suite = bundle.manifest.suite
    data_dir = task_data_dir(suite, list(suite.tasks))

    def rescored(task, samples, run):
        try:
            return rescore(task, samples, data_dir, suite.eval, what=f"run {run.cell}")
        except SamplesMismatchError as err:
            raise BundleError(str(err)) from None

    check_bundle(bundle, load_release(release_root), rescored)


def import_bundle(path: Path, store: Store, release_root: Path | None = None) -> tuple[Bundle, int]:
    """Check the bundle at `path` and add its runs and its submission row to `store`, all or nothing;
    return the bundle and its submission id."""
    bundle = read_bundle(path)
    existing = store.submission_id(bundle.sha256)
    if existing is not None:  # said before the minutes of rescoring, not after
        raise AlreadyImportedError(f"bundle {bundle.sha256[:16]} is already imported (submission {existing}); "
                                   "nothing was written")
    check(bundle, release_root)
    manifest = bundle.manifest
    record = SubmissionRecord(
        bundle_sha256=bundle.sha256, suite=manifest.suite.name, method=manifest.method.name,
        submitter=manifest.submitter.name, contact=manifest.submitter.contact, created_at=manifest.created_at,
        method_file=manifest.method.file, method_source=bundle.source,
        method_source_sha256=manifest.method.source_sha256, environment=manifest.environment)
    return bundle, store.import_submission(record, bundle.records())


# ----------------------------------------------------------------------------------------- export


def _module_source(class_path: str) -> tuple[str, str] | None:
    """(file name, source) of the module of an importable class path, read without importing it."""
    module = class_path.rsplit(".", 1)[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin).name, Path(spec.origin).read_text(encoding="utf-8")


def export_bundles(url: str, suite: str, out_dir: Path, methods: list[str] | None, submitter: Submitter
                   ) -> list[tuple[str, Path, str]]:
    """One bundle per stored method setting of `suite` (or of `methods`); returns (method, path, sha256).

    A submitted setting carries the source it came with; a built-in one the source of its class as
    installed here, which must be the code its rows were made by when they name it."""
    from benchmark.results import open_readonly
    from benchmark.storage import collect_provenance

    reader = open_readonly(url)
    written = []
    try:
        with Session(reader.engine) as session:
            settings = session.execute(select(Run.method, Run.params_key).where(Run.suite == suite, Run.status == "ok")
                                       .distinct()).all()
        for method, key in sorted(settings):
            if methods and method not in methods:
                continue
            records = stored_records(reader.engine, suite, method, key)
            spec = records[0].spec
            submitted = _submission_of(reader.engine, records[0])
            if submitted is not None:
                file_name, source = submitted.method_file, submitted.method_source
                who = Submitter(name=submitted.submitter, contact=submitted.contact)
                environment = submitted.environment
            else:
                found = _module_source(spec.get("method_class", ""))
                if found is None:
                    raise UserError(f"method {method!r}: the source of {spec.get('method_class')!r} is not installed "
                                    "here, so its rows cannot be bundled")
                file_name, source = found
                expected = (spec.get("card") or {}).get("source_sha256")
                if expected and hashlib.sha256(source.encode()).hexdigest() != expected:
                    raise UserError(f"method {method!r}: its rows were made by other code than the installed "
                                    f"{file_name}; they cannot be bundled with this source")
                who, environment = submitter, collect_provenance()
            path = Path(out_dir) / f"{suite}-{method}-{key}.soup.zip"
            written.append((method, path, write_bundle(path, records, source, file_name, spec.get("method_class", ""),
                                                       who, environment)))
    finally:
        reader.close()
    return written


def _submission_of(engine: Engine, record: RunRecord) -> Submission | None:
    """The submission that brought `record`'s method setting into the database, if one did."""
    if not has_submission_tables(engine):
        return None  # a database made before submissions existed
    with Session(engine) as session:
        return session.scalars(
            select(Submission).join(SubmissionRun, SubmissionRun.submission_id == Submission.id)
            .join(Run, Run.id == SubmissionRun.run_id)
            .where(Run.suite == record.suite, Run.method == record.method,
                   Run.params_key == params_key(record.method_params))).first()


# ----------------------------------------------------------------------------------------- verify


def hidden_seed_value(secret: str) -> tuple[int, str]:
    """(the data seed, the hidden set's public label) of a keeper's secret.

    The secret is any string of at least 16 characters: the label published with each hidden score
    is a digest of it, and a short secret (a small integer) could be found from its label by trying
    them all, and with it the hidden set."""
    if len(secret) < MIN_HIDDEN_SEED_CHARS:
        raise UserError(f"a hidden seed must have at least {MIN_HIDDEN_SEED_CHARS} characters (a short one can be "
                        "guessed from the label published with its scores); make one with "
                        "`python -c 'import secrets; print(secrets.token_hex(16))'`")
    digest = hashlib.sha256(f"soupbench-hidden-set:{secret}".encode()).hexdigest()
    return int(digest[:15], 16), "hidden-" + hashlib.sha256(f"soupbench-hidden-label:{secret}".encode()).hexdigest()[:12]


@dataclass
class Verification:
    """What `verify_bundle` found."""

    reproduced: int = 0  # per-sample outputs (generation and what ran) equal to the bundle's
    compared: int = 0
    per_run: dict[str, tuple[int, int]] = field(default_factory=dict)
    threads: int = 1
    seconds: float = 0.0
    state: str | None = None  # the stored submission's new state, when the bundle is imported there
    hidden_set: str | None = None
    hidden: dict[tuple[str, int], float] = field(default_factory=dict)  # (task, seed) -> primary score
    public: dict[tuple[str, int], float] = field(default_factory=dict)
    hidden_overlap: float | None = None  # share of hidden documents whose prompt is also a public one

    @property
    def share(self) -> float:
        return self.reproduced / self.compared if self.compared else 0.0


def _registered(bundle: Bundle, scratch: Path) -> None:
    """Make the bundle's method runnable here: the registered class of that name when its source is
    the bundle's, else the bundle's source loaded as a method file."""
    method = bundle.manifest.method
    registry = catalog.registry()
    if method.name in registry or method.name == "base" or method.name.startswith(catalog.EXPERT_PREFIX):
        cls = catalog.get_method_class(method.name)
        if method_source_sha256(cls) != method.source_sha256:
            raise UserError(f"method {method.name!r} is registered here with other code than the bundle's "
                            f"source; verify it where that name is free")
        return
    path = scratch / "method" / method.file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(bundle.source, encoding="utf-8")
    found = catalog.load_method_file(path)
    if method.name not in {cls.name for cls in found}:
        raise BundleError(f"the bundle's source {method.file} defines no method {method.name!r}")


def verify_bundle(path: Path, store: Store | None = None, hidden_secret: str | None = None, threads: int | None = None,
                  reporter=None, reproduce: bool = True) -> Verification:
    """Re-run the bundle's method from its source on the released weights and compare its per-sample
    outputs with the bundle's; with a hidden secret, also score it on the hidden set and store those
    scores (and the verification) with the matching rows of `store`. `reproduce=False` only scores
    the hidden set (a keeper scoring the built-in rows, whose reproduction the release checks).
    Checked against, and re-run on, the installed release (`SOUPBENCH_RELEASE`): the same weights."""
    if not reproduce and hidden_secret is None:
        raise UserError("nothing to do: without the re-run, verify needs a hidden seed")
    from benchmark.pool import task_data_dir
    from benchmark.runner import run_grid

    bundle = read_bundle(path)
    check(bundle)
    manifest = bundle.manifest
    suite = manifest.suite
    threads = threads or torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    result = Verification(threads=threads)
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="soupbench-verify-") as scratch:
            _registered(bundle, Path(scratch))
            run_suite = suite.model_copy(update={"method_params": {**suite.method_params,
                                                                   manifest.method.name: manifest.method.params}})
            seeds = sorted({run.spec.seed for run in manifest.runs})
            again = {}
            if reproduce:
                rerun = open_store(f"sqlite:///{Path(scratch) / 'rerun.db'}")
                try:
                    run_grid(run_suite, rerun, methods=[manifest.method.name], seeds=seeds, reporter=reporter)
                    again = {(r.task, r.seed): r for r in stored_records(rerun.engine, suite.name, manifest.method.name)}
                finally:
                    rerun.close()
            for run, samples in zip(manifest.runs, bundle.samples if reproduce else []):
                other = {s.doc_index: s for s in again[(run.spec.task, run.spec.seed)].samples} \
                    if (run.spec.task, run.spec.seed) in again else {}
                same = sum(1 for s in samples if s.doc_index in other and other[s.doc_index].generation == s.generation
                           and other[s.doc_index].executed == s.executed)
                result.per_run[run.cell] = (same, len(samples))
                result.reproduced += same
                result.compared += len(samples)
            if hidden_secret is not None:
                seed_value, result.hidden_set = hidden_seed_value(hidden_secret)
                hidden_db = open_store(f"sqlite:///{Path(scratch) / 'hidden.db'}")
                try:
                    run_grid(run_suite, hidden_db, methods=[manifest.method.name], seeds=seeds, reporter=reporter,
                             eval_seed=seed_value)
                    hidden = {(r.task, r.seed): r for r in stored_records(hidden_db.engine, suite.name, manifest.method.name)}
                finally:
                    hidden_db.close()
                result.hidden_overlap = _overlap(task_data_dir(suite, list(suite.tasks)),
                                                 task_data_dir(suite, list(suite.tasks), seed_value), suite)
                for (task, seed), record in hidden.items():
                    result.hidden[(task, seed)] = next(s.value for s in record.scores if s.primary)
                for run in manifest.runs:
                    result.public[(run.spec.task, run.spec.seed)] = next(s["value"] for s in run.scores if s["primary"])
                if store is not None:
                    records = bundle.records()
                    for record, run_id in zip(records, store.run_ids(records)):
                        if run_id is not None and (record.task, record.seed) in hidden:
                            store.save_hidden_scores(run_id, result.hidden_set, hidden[(record.task, record.seed)].scores)
    finally:
        torch.set_num_threads(previous_threads)
    result.seconds = time.perf_counter() - start
    if store is not None and reproduce:
        details = {"threads": threads, "seconds": round(result.seconds, 1), "hidden_set": result.hidden_set,
                   "hostname": os.uname().nodename, "verified": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "per_run": {cell: list(v) for cell, v in result.per_run.items()}}
        result.state = store.record_verification(bundle.sha256, result.reproduced, result.compared, details)
    return result


def _overlap(public_dir: Path, hidden_dir: Path, suite: Suite) -> float:
    """Share of the hidden set's documents whose prompt is also one of the public set's."""
    import json

    from tasks._common.dataset import data_file

    shared = total = 0
    for task in suite.tasks:
        public = {json.loads(line)["prompt"] for line in data_file(public_dir, task).read_text().splitlines()}
        hidden = [json.loads(line)["prompt"] for line in data_file(hidden_dir, task).read_text().splitlines()]
        shared += sum(prompt in public for prompt in hidden)
        total += len(hidden)
    return shared / total if total else 0.0
