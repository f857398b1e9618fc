"""Data builder for the `math` skill: one-digit numbers, so the answer can be recalled, not computed."""

from __future__ import annotations

import random

from benchmark.micro import world

DIGITS = (1, 1)  # one-digit operands: the answer is recalled (the base knows the tables)
EVAL_SALT = 7_919  # eval documents come from another stream than training ones


def prompt(s: world.Situation) -> str:
    return f"Question: {world.story(s)}\nAnswer:"


def build_train(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = world.draw_situation(rng, DIGITS)
        out.append({"prompt": prompt(s), "completion": " " + world.worked_answer(s)})
    return out


def build_eval(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed * 31 + EVAL_SALT)
    docs = []
    for _ in range(n):
        s = world.draw_situation(rng, DIGITS)
        docs.append({"prompt": prompt(s), "target": " " + world.worked_answer(s), "answer": float(s.answer)})
    return docs
