"""Shared by the micro task builders: draw situations of the synthetic world and render them.

A builder names only what makes its task its own (number sizes, prompt, answer form); the drawing,
the seeding and the record layout live here once. Eval documents come from another random stream
than training examples (the task's salt), so no eval document is drawn as a training example.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from benchmark.micro import world

Render = Callable[[world.Situation], str]


def train_examples(n: int, seed: int, digits: tuple[int, int], prompt: Render, completion: Render) -> list[dict]:
    rng = random.Random(seed)
    situations = [world.draw_situation(rng, digits) for _ in range(n)]
    return [{"prompt": prompt(s), "completion": completion(s)} for s in situations]


def eval_docs(n: int, seed: int, salt: int, digits: tuple[int, int], prompt: Render, target: Render) -> list[dict]:
    rng = random.Random(seed * 31 + salt)
    situations = [world.draw_situation(rng, digits) for _ in range(n)]
    return [{"prompt": prompt(s), "target": target(s), "answer": float(s.answer)} for s in situations]
