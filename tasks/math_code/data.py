"""Data builder for `math_code`: the math skill's stories with 3-4 digit numbers, a program asked."""

from __future__ import annotations

import random

from benchmark.micro import world

DIGITS = (3, 4)
EVAL_SALT = 1_299_709


def prompt(s: world.Situation) -> str:
    return f"Question: {world.story(s)}\nProgram:\n"


def build_eval(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed * 31 + EVAL_SALT)
    docs = []
    for _ in range(n):
        s = world.draw_situation(rng, DIGITS)
        docs.append({"prompt": prompt(s), "target": world.program(s), "answer": float(s.answer)})
    return docs
