"""Data builder for the `math` skill: one-digit numbers, so the answer can be recalled, not computed."""

from __future__ import annotations

from benchmark.micro import world
from tasks._common.synthetic import eval_docs, train_examples

DIGITS = (1, 1)  # one-digit operands: the answer is recalled (the base knows the tables)
EVAL_SALT = 7_919  # eval documents come from another stream than training ones


def prompt(s: world.Situation) -> str:
    return f"Question: {world.story(s)}\nAnswer:"


def answer(s: world.Situation) -> str:
    return " " + world.worked_answer(s)


def build_train(n: int, seed: int, digits: tuple[int, int] = DIGITS) -> list[dict]:
    return train_examples(n, seed, tuple(digits), prompt, answer)


def build_eval(n: int, seed: int, digits: tuple[int, int] = DIGITS) -> list[dict]:
    return eval_docs(n, seed, EVAL_SALT, tuple(digits), prompt, answer)
