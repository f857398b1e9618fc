"""Data builder for the `code` skill: any size of number, since the program does the arithmetic."""

from __future__ import annotations

import random
from collections.abc import Callable

from benchmark.micro import world
from tasks._common.synthetic import HELD_OUT, eval_docs, train_examples

DIGITS = (1, 4)
EVAL_SALT = 104_729
PHRASING_SALT = 65_537


def prompt(s: world.Situation, phrasing: int = 0) -> str:
    return f"Instruction: {world.instruction(s, phrasing)}\nProgram:\n"


def _phrased_prompts(seed: int) -> Callable[[world.Situation], str]:
    """Prompts with a phrasing drawn per example from a stream of its own (the situations' stream,
    shared with the other skills, stays as it is)."""
    phrasings = random.Random(seed * 17 + PHRASING_SALT)
    return lambda s: prompt(s, phrasings.randrange(world.N_PHRASINGS))


def build_train(n: int, seed: int, digits: tuple[int, int] = DIGITS) -> list[dict]:
    held_out = {d["prompt"] for size in {tuple(digits), DIGITS} for d in build_eval(HELD_OUT, seed, size)}
    return train_examples(n, seed, tuple(digits), _phrased_prompts(seed), world.program, held_out)


def build_eval(n: int, seed: int, digits: tuple[int, int] = DIGITS) -> list[dict]:
    return eval_docs(n, seed, EVAL_SALT, tuple(digits), _phrased_prompts(seed + EVAL_SALT), world.program)
