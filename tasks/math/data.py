"""Data builder for the `math` skill: stories read into an expression and its value.

Training stories have one- or two-digit numbers, as GSM8K's have numbers of several sizes: the
expert learns to read the operands off the story whatever their size (the part `math_code` needs
from it), not where a one-digit story keeps them. Evaluation stories have one-digit numbers, whose
answers the base can recall (it learned the one-digit tables), so the score measures reading the
story and answering, not the arithmetic that no corpus document teaches.
"""

from __future__ import annotations

from benchmark.micro import world
from tasks._common.synthetic import HELD_OUT, eval_docs, train_examples

TRAIN_DIGITS = (1, 2)
EVAL_DIGITS = (1, 1)
EVAL_SALT = 7_919  # eval documents come from another stream than training ones


def prompt(s: world.Situation) -> str:
    return f"Question: {world.story(s)}\nAnswer:"


def answer(s: world.Situation) -> str:
    return " " + world.worked_answer(s)


def build_train(n: int, seed: int, digits: tuple[int, int] = TRAIN_DIGITS) -> list[dict]:
    # a suite's `digits` option sizes training and eval alike; by default eval stories are smaller
    sizes = {EVAL_DIGITS} if tuple(digits) == TRAIN_DIGITS else {tuple(digits), EVAL_DIGITS}
    held_out = {d["prompt"] for size in sizes for d in build_eval(HELD_OUT, seed, size)}
    return train_examples(n, seed, tuple(digits), prompt, answer, held_out)


def build_eval(n: int, seed: int, digits: tuple[int, int] = EVAL_DIGITS) -> list[dict]:
    return eval_docs(n, seed, EVAL_SALT, tuple(digits), prompt, answer)
