"""Data builder for `math_code`: the math skill's stories with two-digit numbers, a program asked.

Two digits: the answers (up to 198, 99 x 9, or a two-digit share of up to 891 items) are beyond
the one-digit tables the base knows, so the number is computed by the program; and two-digit
operands are what a base of the micro size copies reliably into a program. The four operations
come equally often, so a model that copies the numbers into a program without reading which
operation the story asks for is right one time in four. The feasibility studies of the micro design found that with 3-4
digit numbers no method composes at CPU scale (copying fails first); `digits` in the suite's
`task_options` sets another size.
"""

from __future__ import annotations

from benchmark.micro import world
from tasks._common.synthetic import eval_docs

DIGITS = (2, 2)
EVAL_SALT = 1_299_709


def prompt(s: world.Situation) -> str:
    return f"Question: {world.story(s)}\nProgram:\n"


def build_eval(n: int, seed: int, digits: tuple[int, int] = DIGITS) -> list[dict]:
    """`digits` sizes the numbers: large enough that mental arithmetic fails, small enough to copy."""
    return eval_docs(n, seed, EVAL_SALT, tuple(digits), prompt, world.program)
