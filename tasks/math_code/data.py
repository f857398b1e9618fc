"""Data builder for `math_code`: the math skill's stories with 3-4 digit numbers, a program asked."""

from __future__ import annotations

from benchmark.micro import world
from tasks._common.synthetic import eval_docs

DIGITS = (3, 4)
EVAL_SALT = 1_299_709


def prompt(s: world.Situation) -> str:
    return f"Question: {world.story(s)}\nProgram:\n"


def build_eval(n: int, seed: int, digits: tuple[int, int] = DIGITS) -> list[dict]:
    """`digits` sizes the numbers: large enough that mental arithmetic fails, small enough to copy."""
    return eval_docs(n, seed, EVAL_SALT, tuple(digits), prompt, world.program)
