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

from benchmark.errors import UserError
from benchmark.micro import world

Render = Callable[[world.Situation], str]


# How many eval documents' prompts training skips (of the default size and of the size asked):
# the first HELD_OUT of any eval set stay out of training.
HELD_OUT = 1000


def train_examples(n: int, seed: int, digits: tuple[int, int], prompt: Render, completion: Render,
                   held_out: Collection[str] = ()) -> list[dict]:
    """`n` examples drawn in order, skipping any whose prompt is in `held_out` (the eval prompts)."""
    rng = random.Random(seed)
    examples, draws = [], 0
    while len(examples) < n:
        draws += 1
        if draws > 100 * n + 1000:
            raise UserError(f"drew only {len(examples)} of {n} training examples with {digits}-digit numbers that "
                            "are not eval prompts: the eval set covers (nearly) every such prompt")
        s = world.draw_situation(rng, digits)
        text = prompt(s)
        if text not in held_out:
            examples.append({"prompt": text, "completion": completion(s)})
    return examples


def eval_docs(n: int, seed: int, salt: int, digits: tuple[int, int], prompt: Render, target: Render) -> list[dict]:
    """Eval documents; `category` (the operation) is stored with each sample, so the task page can
    show where a method fails (e.g. right on every division, wrong on every addition)."""
    rng = random.Random(seed * 31 + salt)
    situations = [world.draw_situation(rng, digits) for _ in range(n)]
    return [{"prompt": prompt(s), "target": target(s), "answer": float(s.answer), "category": s.op}
            for s in situations]
