"""The suite's base model: built (micro) or loaded (hub), cached, and handed out as fresh copies."""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from benchmark import cache
from benchmark.micro.model import BUILD_VERSION, build_micro_base
from benchmark.suite import HubBase, MicroBase, Suite
from benchmark.taskinfo import TASKS


@dataclass
class BaseModel:
    """A loaded base: its folder, its fingerprint (part of every expert's cache key) and weights."""

    path: Path
    fingerprint: str
    model: PreTrainedModel
    tokenizer: object

    def fresh(self) -> PreTrainedModel:
        """An independent copy to merge into or train on; the pristine base stays untouched."""
        return copy.deepcopy(self.model)


def _format_samples(suite: Suite) -> list[str]:
    """A few rendered prompts of each skill's task: the tokenizer learns their labels as whole tokens.
    Skills, not tasks: the skills are part of the recipe, the task list is not (a composite task
    reuses its skills' labels)."""
    samples = []
    for name in suite.skill_names:
        for doc in TASKS.get(name).build_eval(20, suite.data_seed):
            samples.append(doc["prompt"] + doc["target"])
    return samples


def default_device() -> str:
    """`SOUPBENCH_DEVICE`, else CUDA when present, else the CPU."""
    return os.environ.get("SOUPBENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def prepare_base(suite: Suite, progress: Callable[[int, int, float], None] | None = None,
                 device: str | None = None) -> BaseModel:
    """Build the micro base once per recipe (cached), or load a pretrained one.

    The device kind is part of the micro base's cache key: the same recipe pretrained on a GPU and
    on a CPU gives different weights, and a stored score must name the weights it came from.
    """
    device = device or default_device()
    spec = suite.base
    if isinstance(spec, MicroBase):
        samples = _format_samples(suite)
        key = _micro_key(spec, device, samples)
        folder = cache.cache_dir("base", key)
        if not cache.is_complete(folder):
            shutil.rmtree(folder, ignore_errors=True)
            build_micro_base(spec, folder, samples, progress, device)
            cache.mark_complete(folder)
        return _load(folder, f"micro-{key}", torch.float32, device)
    assert isinstance(spec, HubBase)
    dtype = getattr(torch, spec.dtype)
    model = AutoModelForCausalLM.from_pretrained(spec.model_id, revision=spec.revision, dtype=dtype).to(device)
    tokenizer = AutoTokenizer.from_pretrained(spec.model_id, revision=spec.revision)
    fingerprint = f"{spec.model_id}@{spec.revision or getattr(model.config, '_commit_hash', None) or 'main'}"
    return BaseModel(Path(spec.model_id), fingerprint, model.eval(), tokenizer)


def _micro_key(spec: MicroBase, device: str, format_samples: list[str]) -> str:
    """Recipe, build version, device kind, and the task prompts the tokenizer is trained with (a
    change of a task's format gives another tokenizer, hence another base)."""
    return cache.content_hash(spec.model_dump(mode="json"), BUILD_VERSION, torch.device(device).type,
                              cache.content_hash(format_samples))


def expected_fingerprint(suite: Suite, device: str | None = None) -> str | None:
    """The fingerprint `prepare_base` will give this suite's base, known before building it (micro
    bases); None for hub models, whose fingerprint names the commit resolved at load time."""
    if isinstance(suite.base, MicroBase):
        return f"micro-{_micro_key(suite.base, device or default_device(), _format_samples(suite))}"
    return None


def _load(folder: Path, fingerprint: str, dtype: torch.dtype, device: str) -> BaseModel:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return BaseModel(folder, fingerprint, model, tokenizer)
