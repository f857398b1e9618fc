"""The contract of a merge method: what it is given, what it declares, what it returns.

A method is one file in `methods/` (or a plugin) holding one subclass of `MergeMethod`. It never
evaluates and never stores: it turns experts (plus what it declares it consumes) into per-module
deltas. Dense methods subclass `ModuleWiseMethod` and write only `merge_module`, a pure function on
tensors; the harness walks the modules one at a time so no method holds k dense copies of a model.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import torch
from pydantic import BaseModel, ConfigDict

from benchmark.lora import Expert, LoraFactors, module_union
from benchmark.threads import ordered_map

# A merged module is either a dense delta (out x in) or, for methods that stay low-rank, factors.
Delta = Union[torch.Tensor, LoraFactors]


class Consumes(str, enum.Enum):
    """What a method uses beyond the experts; shown on the leaderboard, recorded with each run."""

    NOTHING = "nothing"  # base + experts only
    SKILL_SAMPLE = "skill_sample"  # a small sample of the skills' training data (e.g. CAT, 5%)
    SKILL_DATA = "skill_data"  # all of the skills' training data (data mixing)
    TARGET_EXAMPLES = "target_examples"  # a few examples of the target task (e.g. LoraHub)


class MethodParams(BaseModel):
    """Hyperparameters of a method; subclasses add typed fields with the papers' defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class MergeContext:
    """What the harness hands a method besides the experts.

    Methods that train (CAT, data mixing) reach data and the training loop only through here, so a
    method file holds no training code of its own and consumes only what it declared.
    """

    seed: int
    skills: list[str] = field(default_factory=list)
    # skill name -> training examples (dicts with "prompt" and "completion"); filled only for
    # methods that consume skill data.
    skill_data: dict[str, list[dict]] = field(default_factory=dict)
    # For methods that consume target examples (LoraHub): the task merged for, and a few of its
    # examples ("prompt", "target", "answer"), drawn apart from the documents it is scored on.
    target_task: str | None = None
    target_examples: list[dict] = field(default_factory=list)
    # Builds a fresh copy of the base model (train-mode decisions are the trainer's).
    load_base: Callable[[], torch.nn.Module] | None = None
    tokenizer: Any = None
    # The suite's training services (benchmark.training.Trainer), for methods that train.
    trainer: Any = None
    device: str = "cpu"
    report: Callable[[str], None] = lambda message: None
    # Threads a module-wise merge may spread its modules over (benchmark.threads); 1 = none.
    threads: int = 1


@dataclass
class MergeResult:
    """Per-module deltas (possibly a lazy iterator) and facts worth recording with the run."""

    deltas: Iterator[tuple[str, Delta]] | dict[str, Delta]
    output_rank: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def items(self) -> Iterator[tuple[str, Delta]]:
        return iter(self.deltas.items()) if isinstance(self.deltas, dict) else self.deltas


class MergeMethod(abc.ABC):
    """Base class of every merge method. Subclasses set the class attributes and `merge`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    family: ClassVar[str] = "other"
    consumes: ClassVar[Consumes] = Consumes.NOTHING
    Params: ClassVar[type[MethodParams]] = MethodParams
    # True for a method whose merge trains (minutes): its result is kept by content and reused by
    # later runs with the same inputs, with the cost it had when computed (benchmark.merge_cache).
    cache_result: ClassVar[bool] = False
    # True for a method whose merge looks at one module at a time and never at the base's weights
    # (no `context.load_base`): `soupbench merge` then streams the base from its files to the
    # output shard by shard (benchmark.streaming) instead of loading it. Methods that train keep
    # the in-memory path; so does a plugin unless it says otherwise.
    streams: ClassVar[bool] = False

    def __init__(self, params: MethodParams | None = None, **overrides: Any) -> None:
        if params is None:
            params = self.Params(**overrides)
        elif overrides:
            params = params.model_copy(update=overrides)
        self.params = params

    @property
    def display_name(self) -> str:
        return self.name

    @abc.abstractmethod
    def merge(self, experts: list[Expert], context: MergeContext) -> MergeResult:
        """Turn the experts (plus what the method declared it consumes) into per-module deltas."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


class ModuleWiseMethod(MergeMethod):
    """A dense method: the same pure function applied module by module to the experts' dW_i."""

    streams = True
    # True when merge_module draws from the generator (DARE, and any plugin unless it says not):
    # with several threads those calls run one at a time in module order, so the draws, and the
    # result, are the same for any number of threads.
    draws_at_random: ClassVar[bool] = True

    @abc.abstractmethod
    def merge_module(self, deltas: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Combine the experts' dense deltas of one module (a missing module counts as zeros)."""

    def merge(self, experts: list[Expert], context: MergeContext) -> MergeResult:
        generator = torch.Generator().manual_seed(context.seed)

        def dense_deltas(module: str) -> list[torch.Tensor]:
            present = [e.modules[module] for e in experts if module in e.modules]
            shape = present[0].shape
            return [e.modules[module].delta() if module in e.modules else torch.zeros(shape) for e in experts]

        merged = ordered_map(dense_deltas, lambda deltas: self.merge_module(deltas, generator),
                             module_union(experts), context.threads, finish_in_order=self.draws_at_random)
        return MergeResult(deltas=merged)
