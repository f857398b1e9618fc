"""Data builder for `math_code`: the math skill's stories with 3-4 digit numbers, a program asked."""

from __future__ import annotations

from benchmark.micro import world
from tasks._common.synthetic import eval_docs

DIGITS = (3, 4)
EVAL_SALT = 1_299_709


def prompt(s: world.Situation) -> str:
    return f"Question: {world.story(s)}\nProgram:\n"


def build_eval(n: int, seed: int) -> list[dict]:
    return eval_docs(n, seed, EVAL_SALT, DIGITS, prompt, world.program)
