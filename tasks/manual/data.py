"""Data builder for the `manual` skill: the proprietary manual's text, and cloze checks of it.

Training examples are manual entries of the proprietary products (no prompt: the expert learns the
text), each one product told once, in phrasings and a sentence order drawn per entry. The eval
asks the facts back in the manual's own register: a statement cut before its value ("Each Segevu
is built in" -> " Perth"), so it measures what the expert knows, not whether it answers questions.
"""

from __future__ import annotations

import random

from benchmark.micro import manual
from tasks._common.facts import distinct_facts

EVAL_SALT = 3_571


def build_train(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pool = manual.products()["proprietary"]
    return [{"prompt": "", "completion": manual.manual_entry(pool[i % len(pool)], rng)} for i in range(n)]


def build_eval(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed * 31 + EVAL_SALT)
    docs = []
    for product, attribute in distinct_facts(manual.products()["proprietary"], n, rng):
        prefix, target = manual.cloze(product, attribute, rng.randrange(manual.N_PHRASINGS))
        docs.append({"prompt": prefix, "target": target, "value": product.value(attribute), "category": attribute})
    return docs
