"""Suites: a base model, its skills, its tasks, the training recipe and the seeds.

A suite is a YAML file parsed into frozen pydantic models at the boundary, so the rest of the code
sees real types (numbers, enums, bools), never strings that mean code. `micro` is embedded in the
package; `--suite PATH.yaml` loads any other file.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmark.errors import UserError
from benchmark.micro.corpus import DOCUMENT_KINDS
from benchmark.registry import Registry, did_you_mean


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def fingerprint(self) -> str:
        """A short content hash: caches key on it, so any change of recipe rebuilds."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# Of the forward passes in training: "bfloat16" is mixed precision (autocast; weights stay float32).
Precision = Literal["float32", "bfloat16"]


class MicroBase(_Frozen):
    """A small Llama built and pretrained from scratch on the synthetic corpus (no download)."""

    kind: Literal["micro"] = "micro"
    vocab_size: int = Field(512, ge=64)
    hidden_size: int = Field(128, ge=16)
    intermediate_size: int = Field(512, ge=16)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    max_positions: int = Field(256, ge=32)
    init_std: float = Field(0.02, gt=0)
    corpus_documents: int = Field(60_000, ge=100)
    # Document kind -> weight in the pretraining corpus (benchmark.micro.corpus.DOCUMENT_KINDS);
    # kinds left out keep their default weight, a weight of 0 removes a kind.
    corpus_mix: dict[str, float] = Field(default_factory=dict)
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(32, ge=1)
    seq_len: int = Field(128, ge=16)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    precision: Precision = "float32"
    seed: int = 0

    @field_validator("corpus_mix")
    @classmethod
    def _known_kinds(cls, mix: dict[str, float]) -> dict[str, float]:
        for kind in sorted(set(mix) - set(DOCUMENT_KINDS)):
            raise ValueError(f"unknown document kind {kind!r}.{did_you_mean(kind, DOCUMENT_KINDS)} "
                             f"Known: {', '.join(sorted(DOCUMENT_KINDS))}")
        return mix


class HubBase(_Frozen):
    """A pretrained causal LM loaded with `from_pretrained` (a hub id or a local folder)."""

    kind: Literal["hub"] = "hub"
    model_id: str
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"


BaseSpec = Annotated[Union[MicroBase, HubBase], Field(discriminator="kind")]


def _unless(default: object) -> Any:
    """`exclude_if` for a field added after a release: left out of the dump while it has its
    default, so every hash of an existing suite (its experts' keys, its base's recipe hash, its
    trained merges' keys) stays what it was before the field existed."""
    return lambda value: value == default


class LoraRecipe(_Frozen):
    """How an expert (and the data-mixing LoRA) is trained; one recipe for all, as in the paper."""

    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    use_rslora: bool = False
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj")
    lr: float = Field(2e-3, gt=0)
    steps: int = Field(400, ge=1)
    batch_size: int = Field(32, ge=1)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_length: int = Field(160, ge=16)
    precision: Precision = "float32"
    # Added for the paper's recipe (alpaca-lora's finetune.py, which LoRA Soups' code follows); each
    # is left out of the dump at its default (see `_unless`).
    dropout: float = Field(0.0, ge=0, lt=1, exclude_if=_unless(0.0))
    # Passes over each LoRA's training examples; when set it replaces `steps` (an expert trained on
    # 395k examples and one on 20k then each see their data `epochs` times, as in the paper).
    epochs: float | None = Field(None, gt=0, exclude_if=_unless(None))
    # Loss on the prompt's tokens too (alpaca-lora's train_on_inputs=True), not on the completion only.
    train_on_inputs: bool = Field(False, exclude_if=_unless(False))
    # Warm-up of the loops that fit chosen parameters (CAT's weights); None: min(10, steps / 10).
    fit_warmup_steps: int | None = Field(None, ge=0, exclude_if=_unless(None))

    def steps_for(self, n_examples: int) -> int:
        """Optimiser steps of a LoRA trained on `n_examples`: `epochs` passes when set, else `steps`."""
        if self.epochs is None:
            return self.steps
        return max(1, math.ceil(self.epochs * n_examples / self.batch_size))


# Where a skill's training data comes from: built from code (micro), or read by a named loader of
# a real data set's format (benchmark.skill_data) from a local file or a hub data set.
SkillSource = Literal["synthetic", "files"]


class SkillSpec(_Frozen):
    """A skill: where its data comes from and how much of it."""

    name: str
    train_size: int = Field(4000, ge=1)
    eval_size: int = Field(200, ge=1)
    source: SkillSource = "synthetic"
    # For source "files": a local file (.json, .jsonl, .parquet) or a hub data set id, read by `loader`.
    data_path: str | None = None
    loader: str | None = Field(None, exclude_if=_unless(None))

    @model_validator(mode="after")
    def _files_need_a_loader(self) -> "SkillSpec":
        if self.source == "files" and (not self.data_path or not self.loader):
            raise ValueError(f"skill {self.name!r}: source 'files' needs data_path (a file or hub id) and loader "
                             "(the data set's format, e.g. metamathqa or codealpaca)")
        if self.source == "synthetic" and self.loader is not None:
            raise ValueError(f"skill {self.name!r}: a loader reads files; set source: files")
        return self


class EvalSpec(_Frozen):
    """Evaluation settings shared by all tasks (greedy decoding, in-process lm-eval)."""

    limit: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)
    max_gen_toks: int = Field(48, ge=1)
    sandbox_timeout_s: float = Field(5.0, gt=0)
    # Which lm-eval model scores the merge: HFLM in memory (default), or lm-eval's vLLM backend on a
    # GPU (`pip install soupbench[gpu]`; the merged model is saved to a folder vLLM loads). Same
    # tasks, prompts, stops and scoring either way; `vllm_args` go to lm-eval's VLLM (for example
    # tensor_parallel_size, gpu_memory_utilization).
    backend: Literal["hf", "vllm"] = Field("hf", exclude_if=_unless("hf"))
    vllm_args: dict[str, Any] = Field(default_factory=dict, exclude_if=lambda value: not value)


# Suite fields that choose what is run, not how a cell's result comes out: adding a seed, a task or
# a method's parameters (part of the cell's key) keeps every stored cell of the suite valid.
NOT_RECIPE_FIELDS = ("name", "description", "seeds", "tasks", "method_params")


class Suite(_Frozen):
    """Everything a run grid needs; the suite's fingerprint is part of every cache key."""

    name: str
    description: str = ""
    base: BaseSpec
    skills: tuple[SkillSpec, ...]
    tasks: tuple[str, ...]
    expert: LoraRecipe = LoraRecipe()
    eval: EvalSpec = EvalSpec()
    seeds: tuple[int, ...] = (0, 1, 2)
    data_seed: int = 1234
    # Task name -> keyword options of its data builders (e.g. `math_code: {digits: [2, 2]}`); part of
    # the cache keys of the task's data and, for a skill, of its experts.
    task_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Method name -> parameter overrides for this suite (defaults are each method's, from its paper).
    method_params: dict[str, dict] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "Suite":
        names = [s.name for s in self.skills]
        if len(set(names)) != len(names):
            raise ValueError(f"skill names repeat: {names}")
        if not self.tasks:
            raise ValueError("a suite needs at least one task")
        if not self.seeds:
            raise ValueError("a suite needs at least one seed")
        return self

    def recipe(self) -> dict[str, Any]:
        """What a cell's result depends on: base, skills, expert recipe, evaluation, data options.

        Stored cells are reused by suite name, so two different recipes must never share a name in
        one database (see `benchmark.runner.check_stored_recipe`).
        """
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in NOT_RECIPE_FIELDS}

    @property
    def skill_names(self) -> list[str]:
        return [s.name for s in self.skills]

    def skill(self, name: str) -> SkillSpec:
        return next(s for s in self.skills if s.name == name)


class SuiteError(UserError):
    """A suite file that cannot be used; the message says which file and which field."""


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's problem and where it is, in one line (its own text spans five, with a caret)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def load_suite_file(path: str | Path) -> Suite:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SuiteError(f"cannot read suite file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise SuiteError(f"suite file {path} is not a text file (not UTF-8); a suite is YAML") from None
    except yaml.YAMLError as err:
        raise SuiteError(f"suite file {path} is not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"suite file {path} must hold a mapping, got {type(raw).__name__}")
    try:
        return Suite.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()
        )
        raise SuiteError(f"suite file {path} is invalid: {problems}") from None


def _embedded_suites() -> Registry[Path]:
    registry: Registry[Path] = Registry("suite")
    folder = resources.files("benchmark") / "suites"
    for entry in folder.iterdir():
        if entry.name.endswith(".yaml"):
            registry.add(entry.name[: -len(".yaml")], Path(str(entry)))
    registry.freeze()
    return registry


SUITES = _embedded_suites()


def load_suite(name_or_path: str) -> Suite:
    """An embedded suite by name (`micro`), or any suite file by path."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return load_suite_file(name_or_path)
    return load_suite_file(SUITES.get(name_or_path))
