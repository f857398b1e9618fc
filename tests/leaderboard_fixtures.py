"""A realistic grid of stored runs for the leaderboard's tests and benchmark.

Shaped like `soupbench run` on the micro suite: base, the two experts and six merges on math, code
and math_code, several seeds, per-sample outputs whose right/wrong flags *are* the score (score =
fraction correct), merge costs that grow from arithmetic to training, and one failed run that must
never be shown. Everything is deterministic, and `Grid` keeps the raw per-seed values so that tests
compute expected means, intervals and ranks on their own.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from benchmark.storage import RunRecord, SampleRecord, ScoreRecord, open_store

TASKS = ("math", "code", "math_code")
SEEDS = (0, 1, 2)
N_DOCS = 100
CATEGORIES = ("add", "sub", "mul", "div")  # math_code samples' kinds, by document index
PRIMARY = {"math": "exact_match", "code": "exec_accuracy", "math_code": "exec_accuracy"}
MICRO_BASE = {"kind": "micro", "hidden_size": 128, "num_layers": 2, "vocab_size": 512}
# The isolation a run's programs ran under (benchmark.sandbox.isolation_report, abridged): data_mix's
# runs were made on a machine without bubblewrap, with the weak fallback asked for.
STRONG = {"level": "strong", "backend": "bubblewrap 0.8.0"}
WEAK = {"level": "weak", "backend": "weak fallback (SOUPBENCH_ALLOW_WEAK_SANDBOX=1): bubblewrap (bwrap) is not installed"}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    class_path: str
    consumes: str
    quality: dict[str, float]  # expected accuracy per task
    merge_seconds: float
    peak_mb: float
    output_rank: int | None
    params: dict = field(default_factory=dict)


METHODS = (
    MethodSpec("base", "methods.base.Base", "nothing", {"math": .05, "code": .08, "math_code": .02}, 0.0, 310, 0),
    MethodSpec("expert-math", "methods.single_expert.SingleExpert", "nothing",
               {"math": .70, "code": .10, "math_code": .08}, 0.01, 320, 8, {"skill": "math"}),
    MethodSpec("expert-code", "methods.single_expert.SingleExpert", "nothing",
               {"math": .08, "code": .75, "math_code": .12}, 0.01, 320, 8, {"skill": "code"}),
    MethodSpec("task_arithmetic", "methods.task_arithmetic.TaskArithmetic", "nothing",
               {"math": .50, "code": .55, "math_code": .22}, 0.9, 410, 16, {"weights": None}),
    MethodSpec("ties", "methods.ties.Ties", "nothing", {"math": .55, "code": .60, "math_code": .28},
               2.6, 450, 64, {"density": 0.2, "majority_sign_method": "total"}),
    MethodSpec("cat", "methods.cat.Cat", "skill_sample", {"math": .66, "code": .70, "math_code": .45},
               95.0, 900, 16, {"sample_fraction": 0.05, "steps": 100}),
    MethodSpec("data_mix", "methods.data_mix.DataMix", "skill_data",
               {"math": .68, "code": .72, "math_code": .33}, 620.0, 1200, 8),
    MethodSpec("lorahub", "methods.lorahub.LoraHub", "target_examples",
               {"math": .45, "code": .50, "math_code": .25}, 140.0, 700, 16, {"budget": 40, "n_examples": 5}),
)

PROMPTS = {
    "math": ("Mia has {a} shells and finds {b} more. How many shells does Mia have now?", "{a} + {b} = {c}"),
    "code": ("Write a program that prints {a} + {b}.", "print({a} + {b})"),
    "math_code": ("A farm has {a} cows and buys {b} more. How many cows? Answer with a program.",
                  "print({a} + {b})"),
}


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def outcomes(method: MethodSpec, task: str, seed: int, n_docs: int) -> list[bool]:
    """Right/wrong per document: the method's quality plus a per-seed shift (seeds differ)."""
    quality = method.quality.get(task, float(_rng(method.name, task).uniform(0.05, 0.6)))
    shift = float(_rng("shift", method.name, task, seed).normal(0, 0.02))
    draws = _rng("docs", method.name, task, seed).random(n_docs)
    return [bool(d < min(max(quality + shift, 0.0), 1.0)) for d in draws]


def _sample(task: str, doc: int, correct: bool) -> SampleRecord:
    a, b = 1000 + 37 * doc, 2000 + 11 * doc
    prompt, target = PROMPTS.get(task, PROMPTS["math_code"])
    reference = target.format(a=a, b=b, c=a + b)
    generation = reference if correct else target.format(a=a, b=b - 1, c=a + b - 1)
    executed = None if task == "math" else str(a + b if correct else a + b - 1)
    extra = {"answer": a + b}
    if task == "math_code":  # a task whose documents name their kind (the others do not)
        extra["category"] = CATEGORIES[doc % len(CATEGORIES)]
    return SampleRecord(doc, prompt.format(a=a, b=b), generation, reference, executed, correct, extra)


CAT_MODULES = tuple(f"model.layers.{layer}.self_attn.{m}" for layer in (0, 1) for m in ("q_proj", "v_proj"))


def learned_info(method: str, seed: int) -> dict:
    """What a learned method reports of its weights (`MergeResult.info`), as the runner stores it:
    CAT one weight per expert (math, code) per module, LoRAHub one per expert."""
    if method == "cat":
        return {"module_weights": {m: [0.3 + 0.1 * i + 0.01 * seed, 0.7 - 0.1 * i] for i, m in enumerate(CAT_MODULES)},
                "mean_weights": {"math": 0.35 + 0.01 * seed, "code": 0.55}}
    if method == "lorahub":
        return {"expert_weights": {"math": 0.4 + 0.01 * seed, "code": 0.6}, "n_target_examples": 5}
    return {}


def make_runs(suite: str = "micro", methods: tuple[MethodSpec, ...] = METHODS,
              tasks: tuple[str, ...] = TASKS, seeds: tuple[int, ...] = SEEDS, n_docs: int = N_DOCS,
              base: dict | None = None, with_samples: bool = True) -> Iterator[RunRecord]:
    """The runs `soupbench run` would store for this grid, one RunRecord per cell."""
    base = base or MICRO_BASE
    fingerprint = format(zlib.crc32(repr(sorted(base.items())).encode()), "08x")
    for method in methods:
        for seed in seeds:
            merge_seconds = method.merge_seconds * (1 + 0.05 * seed)
            for task in tasks:
                flags = outcomes(method, task, seed, n_docs)
                value = sum(flags) / n_docs
                stderr = math.sqrt(value * (1 - value) / (n_docs - 1))
                yield RunRecord(
                    suite=suite, method=method.name, method_params=method.params, task=task, seed=seed,
                    scores=[ScoreRecord(PRIMARY.get(task, "exec_accuracy"), value, stderr, n_docs, True),
                            ScoreRecord("format_ok", min(1.0, value + 0.2), None, n_docs, False)],
                    samples=[_sample(task, i, f) for i, f in enumerate(flags)] if with_samples else [],
                    merge_seconds=merge_seconds, eval_seconds=3.0, peak_memory_mb=method.peak_mb + seed,
                    output_rank=method.output_rank, consumes=method.consumes,
                    n_target_examples=5 if method.consumes == "target_examples" else None,
                    base_fingerprint=fingerprint, expert_fingerprints={"math": "e1", "code": "e2"},
                    provenance={"python": "3.11", "sandbox": WEAK if method.name == "data_mix" else STRONG,
                                "method_info": learned_info(method.name, seed)},
                    spec={"suite": {"name": suite, "base": base}, "method": method.name,
                          "method_class": method.class_path, "params": method.params, "seed": seed,
                          "tasks": list(tasks), "task": task},
                )


def failed_run(suite: str = "micro") -> RunRecord:
    """A crashed cell: stored, but never part of any mean."""
    return RunRecord(
        suite=suite, method="svd", method_params={"rank": 8}, task="math_code", seed=0, scores=[],
        samples=[], merge_seconds=0.0, eval_seconds=0.0, peak_memory_mb=0.0, output_rank=None,
        consumes="nothing", n_target_examples=None, base_fingerprint="", expert_fingerprints={},
        provenance={}, spec={"method": "svd", "task": "math_code", "seed": 0}, status="failed",
        error="RuntimeError: out of memory",
    )


# Expected numbers, computed apart from the code under test. Student t with 1 and 2 degrees of
# freedom has closed-form quantiles: tan(pi (p - 1/2)) and q sqrt(2 / (1 - q^2)) with q = 2p - 1.
T_975 = {1: math.tan(math.pi * 0.475), 2: 0.95 * math.sqrt(2 / (1 - 0.95**2))}


def logit_bounds(mean: float, half: float) -> tuple[float, float]:
    """A t half-width on the logit scale (delta method), mapped back, by hand: the interval the
    results and the leaderboard give for a share."""
    if mean in (0.0, 1.0):
        return mean, mean
    centre, width = math.log(mean / (1 - mean)), half / (mean * (1 - mean))
    return 1 / (1 + math.exp(width - centre)), 1 / (1 + math.exp(-centre - width))


def hand_bounds(values: list[float]) -> tuple[float, float, float]:
    """(mean, 95% low, 95% high) of a share's mean over 2 or 3 seeds, by hand."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return (mean, *logit_bounds(mean, T_975[n - 1] * sd / math.sqrt(n)))


def hand_interval(values: list[float]) -> tuple[float, float]:
    """(mean, 95% half-width: half the interval's width) of a mean over 2 or 3 seeds, by hand."""
    mean, low, high = hand_bounds(values)
    return mean, (high - low) / 2


def competition_rank(scores: dict[str, float]) -> dict[str, int]:
    """1 + how many score strictly higher: ties share the better rank."""
    return {k: 1 + sum(other > v + 1e-12 for other in scores.values()) for k, v in scores.items()}


@dataclass
class Grid:
    """What was stored, for tests to recompute expectations independently."""

    url: str
    suite: str
    values: dict[tuple[str, str, int], float]  # (method, task, seed) -> primary score
    correct: dict[tuple[str, str, int], list[bool]]
    merge_seconds: dict[str, float]  # method -> mean over seeds

    def cell(self, method: str, task: str, seeds: tuple[int, ...] = SEEDS) -> tuple[float, float]:
        return hand_interval([self.values[(method, task, s)] for s in seeds])

    def bounds(self, method: str, task: str, seeds: tuple[int, ...] = SEEDS) -> tuple[float, float, float]:
        return hand_bounds([self.values[(method, task, s)] for s in seeds])

    def category_accuracy(self, method: str, category: str, task: str = "math_code") -> float:
        """Share right among the category's documents, per seed, then the mean over seeds."""
        k = CATEGORIES.index(category)
        shares = []
        for seed in SEEDS:
            flags = self.correct[(method, task, seed)][k::len(CATEGORIES)]
            shares.append(sum(flags) / len(flags))
        return sum(shares) / len(shares)


def fill_grid(url: str, suite: str = "micro", methods: tuple[MethodSpec, ...] = METHODS,
              tasks: tuple[str, ...] = TASKS, seeds: tuple[int, ...] = SEEDS, n_docs: int = N_DOCS,
              base: dict | None = None, with_failed: bool = True) -> Grid:
    """Store the grid at `url` (created if missing) and return its raw numbers."""
    runs = list(make_runs(suite, methods, tasks, seeds, n_docs, base))
    if with_failed:
        runs.append(failed_run(suite))
    with open_store(url) as store:
        store.save_runs(runs)
    ok = [r for r in runs if r.status == "ok"]
    merge: dict[str, list[float]] = {}
    for r in ok:
        merge.setdefault(r.method, []).append(r.merge_seconds)
    return Grid(
        url=url, suite=suite,
        values={(r.method, r.task, r.seed): r.scores[0].value for r in ok},
        correct={(r.method, r.task, r.seed): [bool(s.correct) for s in r.samples] for r in ok},
        merge_seconds={m: sum(v) / len(v) for m, v in merge.items()},
    )


def write_reference_release(folder) -> None:
    """A release folder whose manifest names only its reference results (`folder/reference.db`,
    already filled): what the leaderboard reads when a user has no database of their own."""
    import json
    from pathlib import Path

    from benchmark.hashing import sha256_file
    from benchmark.release import FORMAT

    folder = Path(folder)
    manifest = {"format": FORMAT, "suite": "micro", "base": {"folder": "base", "recipe_hash": "none", "files": {}},
                "experts": [], "reference": {"file": "reference.db", "sha256": sha256_file(folder / "reference.db")}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


# ----------------------------------------------------------------------------------- submissions

HIDDEN_SET = "hidden-3f2a9c0d1e7b"
SOUP_SOURCE = '''"""A submitted merge: the mean of the experts' task vectors, scaled."""

from benchmark.method import MergeMethod


class Soup(MergeMethod):
    name = "soup"
'''


@dataclass(frozen=True)
class Submitted:
    """One submission stored by `add_submission`, with the numbers tests recompute from."""

    method: str
    submitter: str
    contact: str
    bundle_sha256: str
    state: str
    reproduced: int | None
    compared: int | None
    public: dict[tuple[str, int], float]  # (task, seed) -> primary score
    hidden: dict[tuple[str, int], float]  # (task, seed) -> hidden-set primary score (empty: not scored)


def add_submission(url: str, method: MethodSpec, submitter: str, state: str = "imported",
                   hidden_shift: float | None = None, suite: str = "micro", seeds: tuple[int, ...] = SEEDS,
                   n_docs: int = N_DOCS, created: str = "2026-11-30T10:00:00+00:00") -> Submitted:
    """Import `method`'s grid as a submission from `submitter` (as `soupbench import` stores a
    bundle), verified to `state` ("reproduced": every sample matched; "not_reproduced": 9 in 10),
    and, with `hidden_shift`, scored on `HIDDEN_SET` at each run's public score plus that shift."""
    import hashlib
    from datetime import datetime

    from benchmark.storage import SubmissionRecord

    runs = list(make_runs(suite, (method,), seeds=seeds, n_docs=n_docs))
    sha = hashlib.sha256(f"bundle:{suite}:{method.name}:{submitter}".encode()).hexdigest()
    record = SubmissionRecord(
        bundle_sha256=sha, suite=suite, method=method.name, submitter=submitter,
        contact=f"{submitter.lower().replace(' ', '.')}@example.org", created_at=datetime.fromisoformat(created),
        method_file=f"{method.name}.py", method_source=SOUP_SOURCE.replace('"soup"', f'"{method.name}"'),
        method_source_sha256=hashlib.sha256(SOUP_SOURCE.encode()).hexdigest(), environment={"python": "3.11"})
    compared = sum(len(r.samples) for r in runs)
    reproduced = {"reproduced": compared, "not_reproduced": compared * 9 // 10}.get(state)
    hidden: dict[tuple[str, int], float] = {}
    with open_store(url) as store:
        store.import_submission(record, runs)
        if reproduced is not None:
            assert store.record_verification(sha, reproduced, compared, {"threads": 1}) == state
        if hidden_shift is not None:
            for run, run_id in zip(runs, store.run_ids(runs)):
                value = min(max(run.scores[0].value + hidden_shift * (1 + run.seed), 0.0), 1.0)
                hidden[(run.task, run.seed)] = value
                store.save_hidden_scores(run_id, HIDDEN_SET, [
                    ScoreRecord(run.scores[0].metric, value, None, n_docs, True),
                    ScoreRecord("format_ok", 1.0, None, n_docs, False)])
    return Submitted(method.name, submitter, record.contact, sha, state, reproduced,
                     compared if reproduced is not None else None,
                     {(r.task, r.seed): r.scores[0].value for r in runs}, hidden)


def soup(name: str, quality: float) -> MethodSpec:
    """A submitted method (its class is no installed module: the site knows it from its runs only)."""
    return MethodSpec(name, f"{name}.Soup", "nothing", {t: quality for t in TASKS}, 1.5, 420, 16, {"scale": 0.5})


SUBMISSION_SEEDS = (0, 1)


def fill_submissions(url: str, suite: str = "micro", n_docs: int = 20) -> dict[str, Submitted]:
    """A small board with submissions: base, both experts and task arithmetic built in (two seeds),
    then soup_a (reproduced, scored on the hidden set), soup_b (imported, not verified) and soup_c
    (not reproduced). Returns the submissions by method name."""
    fill_grid(url, suite=suite, methods=METHODS[:4], seeds=SUBMISSION_SEEDS, n_docs=n_docs, with_failed=False)
    return {s.method: s for s in (
        add_submission(url, soup("soup_a", .55), "Ada Lovelace", "reproduced", hidden_shift=-0.04, suite=suite,
                       seeds=SUBMISSION_SEEDS, n_docs=n_docs),
        add_submission(url, soup("soup_b", .65), "Bob Builder", "imported", suite=suite, seeds=SUBMISSION_SEEDS,
                       n_docs=n_docs, created="2026-11-28T09:00:00+00:00"),
        add_submission(url, soup("soup_c", .45), "Cy Young", "not_reproduced", suite=suite, seeds=SUBMISSION_SEEDS,
                       n_docs=n_docs))}


def hand_hidden_average(submitted: Submitted, tasks: tuple[str, ...] = TASKS) -> float:
    """A hidden-set score averaged as the overview's average is: per task over seeds, then over tasks."""
    per_task = [sum(v for (t, _), v in submitted.hidden.items() if t == task)
                / sum(1 for (t, _) in submitted.hidden if t == task) for task in tasks]
    return sum(per_task) / len(per_task)
