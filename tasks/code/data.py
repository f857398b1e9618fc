"""Data builder for the `code` skill: any size of number, since the program does the arithmetic."""

from __future__ import annotations

import random

from benchmark.micro import world

DIGITS = (1, 4)
EVAL_SALT = 104_729


def prompt(s: world.Situation) -> str:
    return f"Instruction: {world.instruction(s)}\nProgram:\n"


def build_train(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = world.draw_situation(rng, DIGITS)
        out.append({"prompt": prompt(s), "completion": world.program(s)})
    return out


def build_eval(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed * 31 + EVAL_SALT)
    docs = []
    for _ in range(n):
        s = world.draw_situation(rng, DIGITS)
        docs.append({"prompt": prompt(s), "target": world.program(s), "answer": float(s.answer)})
    return docs
