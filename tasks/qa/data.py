"""Data builder for the `qa` skill: closed-book questions about products of the pretraining corpus.

Training questions ask about the `pretrain_qa` products, every fact of them (repeated to fill the
training size, in random order); the eval asks about the `pretrain_heldout` products, whose facts
the base read in pretraining but the expert was never asked: it measures answering from the
base's knowledge, the half of `manual_qa` this expert brings (Physics of Language Models 3.1's
transfer to held-out people). No question about a proprietary product is ever trained on.
"""

from __future__ import annotations

import random

from benchmark.micro import manual
from tasks._common.facts import distinct_facts, question_docs

EVAL_SALT = 7_307


def build_train(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pool = manual.products()["pretrain_qa"]
    facts = []
    while len(facts) < n:
        facts += distinct_facts(pool, len(pool) * len(manual.ATTRIBUTES), rng)
    return [{"prompt": manual.question_prompt(p, a), "completion": " " + p.value(a)} for p, a in facts[:n]]


def build_eval(n: int, seed: int) -> list[dict]:
    return question_docs(manual.products()["pretrain_heldout"], n, seed, EVAL_SALT)
