"""The result bundle: one zip file that carries a method's whole submission to a leaderboard.

    bundle.json          what was run and what came out: the submitter, the method (name, class,
                         parameters, its file's name and sha256), the suite, the release's hashes
                         (base and every expert), the environment, and per run its typed spec,
                         scores, costs, fingerprints and the sha256 of its samples file
    method/<file>.py     the method's source, exactly as it ran
    samples/<n>.jsonl    run n's per-sample outputs (prompt, generation, target, what ran, correct)

`read_bundle` checks the bundle is whole (every member present, every sha256 it names right);
`check_bundle` checks it is true: the suite and the artifacts' hashes are those of a known release,
every task and seed of the suite is there, and every stored score follows from the samples (each
sample rescored by the task's own rules, programs run again in the sandbox). What either refuses is
named in one line. Neither writes anything. The bundle's identity is the sha256 of its bytes.

The bundle is integrity, not authentication: a submitter could rewrite a bundle consistently. What
makes a row trustworthy is `soupbench verify` (benchmark.submission): the keeper re-runs the source
on the released weights, and scores it on a hidden set no submitter has seen.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from benchmark.errors import UserError
from benchmark.run_spec import RunSpec
from benchmark.storage import RunRecord, SampleRecord, ScoreRecord, canonical_json
from benchmark.suite import Suite

FORMAT = 1
MANIFEST = "bundle.json"
SCORE_TOLERANCE = 1e-9  # a mean of 0/1 values recomputed in the same order: equal up to rounding
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # members carry no wall-clock time: equal content, equal bytes


class BundleError(UserError):
    """A bundle that is not whole, or not true; the message names what does not match."""


class Submitter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    contact: str = Field(min_length=1)


class BundleMethod(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    class_path: str
    params: dict[str, Any]
    file: str  # the member's name under method/
    source_sha256: str


class BundleRun(BaseModel):
    """One stored cell, as a row of `runs` holds it (its samples in their own member)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: RunSpec
    scores: list[dict[str, Any]]
    merge_seconds: float
    eval_seconds: float
    peak_memory_mb: float
    output_rank: int | None
    consumes: str
    n_target_examples: int | None
    base_fingerprint: str
    expert_fingerprints: dict[str, str]
    provenance: dict[str, Any]
    samples_file: str
    samples_sha256: str

    @property
    def cell(self) -> str:
        return f"({self.spec.method}, {self.spec.task}, seed {self.spec.seed})"


class BundleManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int
    created_at: datetime
    submitter: Submitter
    method: BundleMethod
    suite: Suite
    environment: dict[str, Any]
    runs: list[BundleRun]


class Bundle(BaseModel):
    """A read bundle: its manifest, the method's source, every run's samples and the file's sha256."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    sha256: str
    manifest: BundleManifest
    source: str
    samples: list[list[SampleRecord]]

    def records(self) -> list[RunRecord]:
        """The runs as the runner would have stored them."""
        return [RunRecord(
            suite=run.spec.suite.name, method=run.spec.method, method_params=run.spec.params, task=run.spec.task,
            seed=run.spec.seed, scores=[ScoreRecord(**score) for score in run.scores], samples=samples,
            merge_seconds=run.merge_seconds, eval_seconds=run.eval_seconds, peak_memory_mb=run.peak_memory_mb,
            output_rank=run.output_rank, consumes=run.consumes, n_target_examples=run.n_target_examples,
            base_fingerprint=run.base_fingerprint, expert_fingerprints=run.expert_fingerprints,
            provenance=run.provenance, spec=run.spec.stored(),
        ) for run, samples in zip(self.manifest.runs, self.samples)]


# ---------------------------------------------------------------------------------------- writing


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _samples_bytes(samples: list[SampleRecord]) -> bytes:
    return "".join(canonical_json(asdict(sample)) + "\n" for sample in samples).encode()


def write_bundle(path: Path, records: list[RunRecord], source: str, source_file: str, class_path: str,
                 submitter: Submitter, environment: dict[str, Any]) -> str:
    """Write the bundle of `records` (the ok runs of one method setting) to `path`; return its sha256.

    The file is written next to `path` and renamed into place, so a bundle on disk is always whole.
    """
    if not records:
        raise BundleError("no runs to bundle")
    if any(record.status != "ok" for record in records):
        raise BundleError("a bundle carries finished runs only; rerun the failed cells first")
    methods = {(record.method, canonical_json(record.method_params)) for record in records}
    if len(methods) != 1:
        raise BundleError(f"a bundle carries one method setting, got {len(methods)}")
    source_bytes = source.encode()
    file_name = PurePosixPath(source_file).name
    members: dict[str, bytes] = {f"method/{file_name}": source_bytes}
    runs = []
    ordered = sorted(records, key=lambda r: (r.seed, r.task))
    for index, record in enumerate(ordered):
        data = _samples_bytes(record.samples)
        members[f"samples/{index}.jsonl"] = data
        runs.append(BundleRun(
            spec=RunSpec.model_validate(record.spec), scores=[asdict(score) for score in record.scores],
            merge_seconds=record.merge_seconds, eval_seconds=record.eval_seconds,
            peak_memory_mb=record.peak_memory_mb, output_rank=record.output_rank, consumes=str(record.consumes),
            n_target_examples=record.n_target_examples, base_fingerprint=record.base_fingerprint,
            expert_fingerprints=dict(record.expert_fingerprints), provenance=record.provenance,
            samples_file=f"samples/{index}.jsonl", samples_sha256=_sha256(data)))
    first = ordered[0]
    manifest = BundleManifest(
        format=FORMAT, created_at=datetime.now(timezone.utc), submitter=submitter,
        method=BundleMethod(name=first.method, class_path=class_path, params=first.method_params, file=file_name,
                            source_sha256=_sha256(source_bytes)),
        suite=runs[0].spec.suite, environment=environment, runs=runs)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in [(MANIFEST, manifest.model_dump_json(indent=1).encode()), *sorted(members.items())]:
            archive.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), data, compress_type=zipfile.ZIP_DEFLATED)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
    return _sha256(buffer.getvalue())


# ---------------------------------------------------------------------------------------- reading


def read_bundle(path: Path) -> Bundle:
    """The bundle at `path`, checked whole: a zip with a valid manifest of a known format, the method's
    source and every run's samples present with the sha256 the manifest names."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise BundleError(f"cannot read bundle {path}: {err.strerror}") from None
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise BundleError(f"{path} is not a bundle (not a zip file)") from None
    names = set(archive.namelist())
    if MANIFEST not in names:
        raise BundleError(f"{path} is not a bundle: it has no {MANIFEST}")
    try:
        data = json.loads(archive.read(MANIFEST))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: {MANIFEST} is not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise BundleError(f"{path}: bundle format {found!r}, this SoupBench reads format {FORMAT}")
    try:
        manifest = BundleManifest.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()[:3])
        raise BundleError(f"{path}: {MANIFEST} is invalid: {problems}") from None

    def member(name: str, expected: str, what: str) -> bytes:
        if name not in names:
            raise BundleError(f"{path}: {what} ({name}) is missing")
        content = archive.read(name)
        if _sha256(content) != expected:
            raise BundleError(f"{path}: {what} ({name}) has sha256 {_sha256(content)[:16]}..., "
                              f"{MANIFEST} names {expected[:16]}...: it was changed after the bundle was written")
        return content

    source = member(f"method/{manifest.method.file}", manifest.method.source_sha256, "the method's source")
    samples = []
    for run in manifest.runs:
        content = member(run.samples_file, run.samples_sha256, f"the samples of run {run.cell}")
        try:
            samples.append([SampleRecord(**json.loads(line)) for line in content.decode().splitlines()])
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as err:
            raise BundleError(f"{path}: the samples of run {run.cell} are malformed ({err})") from None
    return Bundle(sha256=_sha256(raw), manifest=manifest, source=source.decode(), samples=samples)


# --------------------------------------------------------------------------------------- checking


def check_bundle(bundle: Bundle, release: Any, rescore: Any) -> None:
    """Refuse (BundleError, one line naming what does not match) a bundle that is not true.

    `release` is a `benchmark.release.Release` the bundle must have been run on (its base recipe, base
    and every expert the manifest names); `rescore(task, samples, run)` recomputes a run's scores from
    its samples (`benchmark.submission` passes `benchmark.evaluation.rescore` on the suite's data).
    """
    manifest = bundle.manifest
    method, suite = manifest.method, manifest.suite
    for run in manifest.runs:
        spec = run.spec
        if spec.method != method.name or spec.params != method.params:
            raise BundleError(f"run {run.cell} is of method {spec.method!r} {spec.params}, the bundle's method is "
                              f"{method.name!r} {method.params}")
        if spec.suite != suite:
            raise BundleError(f"run {run.cell} was run on another suite than the bundle's {suite.name!r}")
        if spec.card is not None and spec.card.source_sha256 and spec.card.source_sha256 != method.source_sha256:
            raise BundleError(f"run {run.cell} was made by method source {spec.card.source_sha256[:16]}..., the "
                              f"bundle carries source {method.source_sha256[:16]}...: the source was changed")
    _check_release(bundle, release)
    missing = sorted({(t, s) for t in suite.tasks for s in suite.seeds}
                     - {(run.spec.task, run.spec.seed) for run in manifest.runs})
    if missing:
        shown = ", ".join(f"{t} seed {s}" for t, s in missing[:6])
        raise BundleError(f"the bundle lacks {len(missing)} cells of suite {suite.name!r} ({shown}): a submission "
                          "covers every task and every seed of its suite")
    cells = [(run.spec.task, run.spec.seed) for run in manifest.runs]
    if len(set(cells)) != len(cells):
        raise BundleError("the bundle holds a cell twice")
    for run, samples in zip(manifest.runs, bundle.samples):
        recomputed = {score.metric: score for score in rescore(run.spec.task, samples, run)}
        stored = {score["metric"]: score for score in run.scores}
        if set(stored) != set(recomputed):
            raise BundleError(f"run {run.cell} stores metrics {sorted(stored)}, its samples give {sorted(recomputed)}")
        for metric, score in stored.items():
            again = recomputed[metric]
            if abs(score["value"] - again.value) > SCORE_TOLERANCE or score["n_samples"] != again.n_samples:
                raise BundleError(f"run {run.cell}: stored {metric} = {score['value']} over {score['n_samples']} "
                                  f"samples does not follow from its samples ({again.value} over {again.n_samples})")
            if bool(score["primary"]) != again.primary:
                raise BundleError(f"run {run.cell}: {metric} is stored as {'' if score['primary'] else 'not '}the "
                                  "primary metric, the task says otherwise")


def _check_release(bundle: Bundle, release: Any) -> None:
    from benchmark.keys import base_recipe_hash

    manifest = bundle.manifest
    if release is None:
        raise BundleError("there is no release here to check the bundle against (set SOUPBENCH_RELEASE, or give `import --release DIR`)")
    base = release.base
    if base_recipe_hash(manifest.suite) != base["recipe_hash"]:
        raise BundleError(f"the bundle's suite {manifest.suite.name!r} has base recipe "
                          f"{base_recipe_hash(manifest.suite)}, not that of the known release "
                          f"({release.manifest.get('suite')!r}, {base['recipe_hash']}): it was not run on released weights")
    experts = {(e["seed"], e["skill"]): e["fingerprint"] for e in release.manifest["experts"]}
    for run in manifest.runs:
        if run.base_fingerprint != base["fingerprint"]:
            raise BundleError(f"run {run.cell} names base {run.base_fingerprint[:16]}..., the release's base is "
                              f"{base['fingerprint'][:16]}...")
        for skill, fingerprint in run.expert_fingerprints.items():
            released = experts.get((run.spec.seed, skill))
            if fingerprint != released:
                shown = released[:16] + "..." if released else "none"
                raise BundleError(f"run {run.cell} names expert {skill} {fingerprint[:16]}..., the release's expert "
                                  f"{skill} of seed {run.spec.seed} is {shown}")
