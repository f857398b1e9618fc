"""Shared by the micro task builders: draw situations of the synthetic world and render them.

A builder names only what makes its task its own (number sizes, prompt, answer form); the drawing,
the seeding and the record layout live here once. Eval documents come from another random stream
than training examples (the task's salt); small numbers still make the same prompt come up in
both streams now and then (a few in a hundred), so a skill's training examples skip the prompts
of its eval documents (`held_out`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection

from benchmark.micro import world

Render = Callable[[world.Situation], str]


HELD_OUT = 1000  # eval documents whose prompts training skips: more than any suite evaluates


def train_examples(n: int, seed: int, digits: tuple[int, int], prompt: Render, completion: Render,
                   held_out: Collection[str] = ()) -> list[dict]:
    """`n` examples drawn in order, skipping any whose prompt is in `held_out` (the eval prompts)."""
    rng = random.Random(seed)
    examples = []
    while len(examples) < n:
        s = world.draw_situation(rng, digits)
        text = prompt(s)
        if text not in held_out:
            examples.append({"prompt": text, "completion": completion(s)})
    return examples


def eval_docs(n: int, seed: int, salt: int, digits: tuple[int, int], prompt: Render, target: Render) -> list[dict]:
    rng = random.Random(seed * 31 + salt)
    situations = [world.draw_situation(rng, digits) for _ in range(n)]
    return [{"prompt": prompt(s), "target": target(s), "answer": float(s.answer)} for s in situations]
