"""Every cache key of the harness, in one place: what each built thing is a function of.

Built things (a micro base, an expert, a trained method's result, a suite's eval documents) are
kept by content (`benchmark.cache`) and shipped in the release under the same keys. A key must
change whenever the thing it names would come out differently, and stay put otherwise, or every
run rebuilds what the release ships (tests/test_micro_release.py checks the release against these
functions). Keeping them side by side is what lets the local and the Ray executor, the release
builder and the submission checks agree on what "the same expert" is.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmark import cache, hashing
from benchmark.method import MergeMethod
from benchmark.micro import corpus
from benchmark.micro.model import BUILD_VERSION
from benchmark.run_spec import method_source_sha256
from benchmark.suite import MicroBase, Suite
from benchmark.taskinfo import get_skill

# Bump when expert training changes in a way the recipe's fields do not capture.
TRAINING_VERSION = 1


def tokenizer_samples(suite: Suite) -> list[str]:
    """A few rendered prompts of each skill's task: the micro tokenizer learns their labels as whole
    tokens, so they are part of the base's recipe. Skills, not tasks: the skills are part of the
    recipe, the task list is not (a composite task reuses its skills' labels)."""
    samples = []
    for name in suite.skill_names:
        for doc in get_skill(name).build_eval(20, suite.data_seed):
            samples.append(doc["prompt"] + doc["target"])
    return samples


def base_recipe_hash(suite: Suite) -> str:
    """What a micro base's weights are a function of, device aside: its recipe, the build version,
    a digest of the pretraining corpus itself and the task prompts the tokenizer is trained with (a
    change of any document maker or of a task's format gives another hash, hence another base).
    This is the hash a release's manifest records."""
    spec = suite.base
    assert isinstance(spec, MicroBase)
    return cache.content_hash(spec.model_dump(mode="json"), BUILD_VERSION,
                              corpus.digest(spec.corpus_documents, spec.seed, spec.corpus_mix or None),
                              hashing.text_digest(tokenizer_samples(suite)))


def base_build_key(recipe_hash: str, device: str) -> str:
    """The cache folder of a base built here: the device kind is part of it, since the same recipe
    pretrained on a GPU and on a CPU gives different weights."""
    return cache.content_hash(recipe_hash, torch.device(device).type)


def expert_key(suite: Suite, base_fingerprint: str, skill: str, seed: int, examples: list[dict]) -> str:
    """Base (by the hash of its weights), skill spec, recipe, seed and a digest of the training
    examples themselves: a change of a skill's data builder (or of its task options) retrains the
    expert without a version bump. A release's manifest records this hash for each expert."""
    spec = suite.skill(skill)
    return cache.content_hash(base_fingerprint, spec.model_dump(mode="json"), suite.data_seed,
                              suite.expert.model_dump(mode="json"), seed, TRAINING_VERSION,
                              cache.content_hash(examples))


def method_source_digest(method: MergeMethod) -> str:
    """sha256 (16 hex digits) of the file that defines the method's class: its code is part of a
    trained result."""
    digest = method_source_sha256(type(method))
    return digest[:16] if digest else "unknown"


def trained_merge_key(suite: Suite, method: MergeMethod, seed: int, base_fingerprint: str,
                      expert_fingerprints: list[str], skill_data: dict, target_task: str | None = None,
                      target_examples: list[dict] | None = None) -> str:
    """The key a trained method's result is cached and released under (`benchmark.merge_cache`):
    its code and parameters, the seed, the base and experts, what it consumed and the training
    recipe. A release whose merges are not keyed so for today's code is stale."""
    consumed: Any = {"skill_data": skill_data, "target_task": target_task, "target_examples": target_examples or []}
    return cache.content_hash(type(method).__module__, type(method).__qualname__, method_source_digest(method),
                              method.params.model_dump(mode="json"), seed, base_fingerprint,
                              expert_fingerprints, cache.content_hash(consumed), suite.expert.model_dump(mode="json"))


def task_data_key(suite: Suite, eval_seed: int) -> str:
    """The folder of a suite's eval documents drawn from `eval_seed` (its `data_seed`, or a hidden
    set's seed): the skills' sizes and the task options choose the documents."""
    return cache.content_hash(suite.name, eval_seed, [s.model_dump() for s in suite.skills], suite.task_options)
