"""The micro design's data contracts: what each skill's data teaches and what it must never show.

The composite task is only a test of merging if neither expert's data (nor the pretraining corpus)
contains its format, and if what it needs from each skill is really in that skill's data.
"""

from __future__ import annotations

import re
from collections import Counter

from benchmark.micro import world
from benchmark.micro.corpus import documents
from tasks.code import data as code_data
from tasks.math import data as math_data
from tasks.math_code import data as math_code_data

NUMBER = re.compile(r"\d+")
STORY_WORDS = set(world.NAMES) | set(world.ITEMS) | set(world.CONTAINERS)


def numbers(text: str) -> Counter:
    return Counter(int(n) for n in NUMBER.findall(text))


def operand_digits(docs: list[dict], field: str) -> set[int]:
    """Digit counts of the first operand of each document; for a division, of the share per
    container (the dividend is that share times a one-digit count)."""
    sizes = set()
    for d in docs:
        a, b = (int(n) for n in NUMBER.findall(d[field])[:2])
        sizes.add(len(str(a // b if " puts them into " in d[field] else a)))
    return sizes


def test_code_instructions_vary_and_their_numbers_are_the_programs():
    train = code_data.build_train(600, 0)
    templates = {NUMBER.sub("N", ex["prompt"]) for ex in train}
    assert len(templates) == len(world.OPS) * world.N_PHRASINGS
    for ex in train:
        assert numbers(ex["prompt"]) == numbers(ex["completion"]), ex
        assert not STORY_WORDS & set(re.findall(r"[A-Za-z]+", ex["prompt"])), ex  # no story in a code prompt
    assert code_data.build_train(600, 0) == train
    evaluation = code_data.build_eval(200, 0)
    assert len({NUMBER.sub("N", d["prompt"]) for d in evaluation}) > 10


def test_no_skill_eval_prompt_is_a_training_prompt():
    """Small numbers make the two streams meet by chance (5 of 200 code prompts at 4,000 examples
    before training skipped them): the skipping is what keeps the eval held out."""
    for skill in (code_data, math_data):
        for seed in (0, 1234):
            trained = {ex["prompt"] for ex in skill.build_train(4000, seed)}
            assert not trained & {d["prompt"] for d in skill.build_eval(200, seed)}
    # a suite's `digits` option sizes both; one-digit code prompts are few, so the streams meet often
    trained = {ex["prompt"] for ex in code_data.build_train(4000, 0, (1, 1))}
    assert not trained & {d["prompt"] for d in code_data.build_eval(200, 0, (1, 1))}


def test_math_trains_on_one_and_two_digit_stories_and_evaluates_on_one_digit():
    train = math_data.build_train(400, 0)
    assert operand_digits(train, "prompt") == {1, 2}
    # one-digit operands and answers the tables give (a subtraction of equal numbers becomes 10 - 9:
    # the story never gives away all; a division shares a one-digit number per container)
    for d in math_data.build_eval(200, 0):
        a, b = (int(n) for n in NUMBER.findall(d["prompt"]))
        assert (a <= 10 and b <= 9) or (" puts them into " in d["prompt"] and a // b <= 9 and a % b == 0), d


def test_the_composite_task_asks_each_operation_equally_often():
    """A program-writer that copies the numbers but cannot read the operation must stay near 1/4."""
    symbols = Counter(d["target"].split()[1] for d in math_code_data.build_eval(400, 0))
    assert set(symbols) == set(world.SYMBOL.values())
    assert max(symbols.values()) / 400 < 0.33


def test_math_code_asks_the_math_stories_for_a_program_and_no_training_story_leaks():
    docs = math_code_data.build_eval(200, 0)
    assert operand_digits(docs, "prompt") == {2}
    assert all(d["prompt"].startswith("Question: ") and d["prompt"].endswith("\nProgram:\n") for d in docs)
    stories = {d["prompt"].removeprefix("Question: ").removesuffix("\nProgram:\n") for d in docs}
    trained = {ex["prompt"].removeprefix("Question: ").removesuffix("\nAnswer:") for ex in math_data.build_train(4000, 1234)}
    assert not stories & trained


def test_no_corpus_document_shows_a_skill_or_task_label_or_maps_a_story_to_a_program():
    for doc in documents(3000, 0):
        assert not any(label in doc for label in ("Question:", "Answer:", "Instruction:", "Program:"))
        assert not ("print(" in doc and " has " in doc), doc
