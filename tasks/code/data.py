"""Data builder for the `code` skill: any size of number, since the program does the arithmetic."""

from __future__ import annotations

from benchmark.micro import world
from tasks._common.synthetic import eval_docs, train_examples

DIGITS = (1, 4)
EVAL_SALT = 104_729


def prompt(s: world.Situation) -> str:
    return f"Instruction: {world.instruction(s)}\nProgram:\n"


def build_train(n: int, seed: int, digits: tuple[int, int] = DIGITS) -> list[dict]:
    return train_examples(n, seed, tuple(digits), prompt, world.program)


def build_eval(n: int, seed: int, digits: tuple[int, int] = DIGITS) -> list[dict]:
    return eval_docs(n, seed, EVAL_SALT, tuple(digits), prompt, world.program)
