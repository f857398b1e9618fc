"""Skills' training data from real data sets: one named loader per data set format.

A skill with `source: files` names a loader (its data set's format) and a `data_path` (a local
file or the hub id); the loader maps each row to the instruction / input / output triple of the
prompt template below and returns training examples ({"prompt", "completion"}) as the trainer
takes them. `train_size` rows are drawn with the suite's data seed (all of them when it covers
the file).

The template is the one LoRA Soups' skill training uses (its `skill_finetune.py`, from the
LLM-Adapters version of alpaca-lora's `finetune.py`): Alpaca's, with that code's indentation of
16 spaces before each section kept as it is, since the experts learn exactly those tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmark.data_sources import HubData, read_rows, sample_rows
from benchmark.registry import Registry
from benchmark.suite import SkillSpec

_INDENT = " " * 16
_HEAD = "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n"
_HEAD_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
               "context. Write a response that appropriately completes the request. \n\n")


def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """The training prompt up to the response (the completion follows it)."""
    if input_text:
        return (f"{_HEAD_INPUT}{_INDENT}### Instruction:\n{_INDENT}{instruction}\n{_INDENT}\n"
                f"{_INDENT}### Input:\n{_INDENT}{input_text}\n{_INDENT}\n{_INDENT}### Response:\n{_INDENT}")
    return f"{_HEAD}{_INDENT}### Instruction:\n{_INDENT}{instruction}\n{_INDENT}\n{_INDENT}### Response:\n{_INDENT}"


@dataclass(frozen=True)
class SkillLoader:
    """A data set's format: where it lives on the hub and how a row becomes (instruction, input, output)."""

    name: str
    hub: HubData
    triple: Callable[[dict], tuple[str, str, str]]

    def examples(self, spec: SkillSpec, seed: int) -> list[dict]:
        """`spec.train_size` training examples of skill `spec` from `spec.data_path`."""
        assert spec.data_path is not None
        rows = read_rows(spec.data_path, self.hub, f"skill {spec.name}'s data ({self.name})")
        examples = []
        for row in sample_rows(rows, spec.train_size, seed):
            instruction, input_text, output = self.triple(row)
            examples.append({"prompt": alpaca_prompt(instruction, input_text), "completion": output})
        return examples


def _text(value: object) -> str:
    return "" if value is None else str(value)


LOADERS: Registry[SkillLoader] = Registry("skill data loader")
# MetaMathQA (Yu et al. 2023): one JSON array of 395k records; `query` is the question, `response`
# the worked answer ending in "The answer is: X"; `type` and `original_question` are not trained on.
LOADERS.add("metamathqa", SkillLoader(
    "metamathqa",
    HubData("meta-math/MetaMathQA", "train", ("query", "response", "type", "original_question"),
            data_file="MetaMathQA-395K.json"),
    lambda row: (_text(row["query"]), "", _text(row["response"]))))
# CodeAlpaca-20k (Chaudhary 2023): one JSON array of 20,022 Alpaca records.
LOADERS.add("codealpaca", SkillLoader(
    "codealpaca",
    HubData("sahil2801/CodeAlpaca-20k", "train", ("instruction", "input", "output"), data_file="code_alpaca_20k.json"),
    lambda row: (_text(row["instruction"]), _text(row["input"]), _text(row["output"]))))
LOADERS.freeze()


def load_skill_examples(spec: SkillSpec, seed: int) -> list[dict]:
    """A `source: files` skill's training examples, read by its named loader."""
    assert spec.loader is not None
    return LOADERS.get(spec.loader).examples(spec, seed)
