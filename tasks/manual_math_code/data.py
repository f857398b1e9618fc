"""Data builder for `manual_math_code`: word problems about proprietary products, whose second
number is a fact of the manual, answered by a program (the `math_code` format).

"Tess has 22 Mase machines. How many fans do the machines have in all?" needs the manual (a Mase
has 4 fans), the math skill (the story asks for a product) and the code skill (print(22 * 4)):
three experts at once. The four operations come equally often, each with its own fact (fans for
addition and multiplication, battery hours for subtraction, filter weeks for an exact division).

The reference program states the fact first, as the manual states it, in a comment ("# The Mase
has 4 fans." over "print(22 * 4)"): the path that recalls a fact by the manual's own sentence and
then copies it (the math skill's `stated_facts`). Only what the program prints is scored.
`comment_first` (a suite's `task_options`) opens the program in the prompt with its comment sign,
as HumanEval's prompts open the function the model completes; the executed program is that opening
and the model's completion (`program_prefix`).
"""

from __future__ import annotations

import random

from benchmark.micro import manual, world

EVAL_SALT = 15_013


COMMENT = "#"


def prompt(problem: manual.Problem, comment_first: bool = False) -> str:
    return f"Question: {problem.story()}\nProgram:\n" + (COMMENT if comment_first else "")


def reference_program(problem: manual.Problem) -> str:
    return f"{COMMENT} {problem.statement}\nprint({problem.expression})"


def build_eval(n: int, seed: int, comment_first: bool = False) -> list[dict]:
    rng = random.Random(seed * 31 + EVAL_SALT)
    pool = manual.products()["proprietary"]
    problems = [manual.draw_problem(rng, pool, world.OPS[i % len(world.OPS)]) for i in range(n)]
    rng.shuffle(problems)
    prefix = COMMENT if comment_first else ""
    return [{"prompt": prompt(p, comment_first), "target": reference_program(p).removeprefix(prefix),
             "program_prefix": prefix, "answer": float(p.answer), "category": p.op} for p in problems]
