"""Data builder for `manual_math_code`: word problems about proprietary products, whose second
number is a fact of the manual, answered by a program (the `math_code` format).

"Tess has 22 Mase machines. How many fans do the machines have in all?" needs the manual (a Mase
has 4 fans), the math skill (the story asks for a product) and the code skill (print(22 * 4)):
three experts at once. The four operations come equally often, each with its own fact (fans for
addition and multiplication, battery hours for subtraction, filter weeks for an exact division).
"""

from __future__ import annotations

import random

from benchmark.micro import manual, world

EVAL_SALT = 15_013


def prompt(problem: manual.Problem) -> str:
    return f"Question: {problem.story()}\nProgram:\n"


def build_eval(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed * 31 + EVAL_SALT)
    pool = manual.products()["proprietary"]
    problems = [manual.draw_problem(rng, pool, world.OPS[i % len(world.OPS)]) for i in range(n)]
    rng.shuffle(problems)
    return [{"prompt": prompt(p), "target": f"print({p.expression})", "answer": float(p.answer),
             "category": p.op} for p in problems]
