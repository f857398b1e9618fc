"""Shared by the manual world's task builders: which facts a task asks about, and how an answer
is compared with a fact's value.

Eval documents ask about distinct (product, attribute) pairs, drawn from their own stream per
task (the task's salt), so a seed gives the same documents on every machine; `category` (the
attribute) is stored with each sample for the task page's breakdown.
"""

from __future__ import annotations

import random
import re

from benchmark.micro import manual

Fact = tuple[manual.Product, str]


def distinct_facts(pool: tuple[manual.Product, ...], n: int, rng: random.Random) -> list[Fact]:
    """`n` distinct (product, attribute) pairs of `pool` in random order (all of them if fewer)."""
    facts = [(product, attribute) for product in pool for attribute in manual.ATTRIBUTES]
    rng.shuffle(facts)
    return facts[:n]


def question_docs(pool: tuple[manual.Product, ...], n: int, seed: int, salt: int) -> list[dict]:
    """Closed-book questions in the `qa` format about the facts of `pool`."""
    rng = random.Random(seed * 31 + salt)
    return [{"prompt": manual.question_prompt(p, a), "target": " " + p.value(a), "value": p.value(a),
             "category": a} for p, a in distinct_facts(pool, n, rng)]


_EDGES = re.compile(r"^[\s\"'`]+|[\s.,;:!?\"'`]+$")


def normalise(text: str) -> str:
    """The answer's first line, lower-cased, without surrounding blanks, quotes or full stop:
    " Porto." and "porto" are the same answer, "Porto Alegre" is not."""
    first = text.strip().split("\n", 1)[0]
    return " ".join(_EDGES.sub("", first).lower().split())


def fact_match(response: str, value: str, statement: bool = False) -> bool:
    """An answer is the value and nothing else; a completed statement ("45 hours") starts with the
    value's words and goes on with the statement's own (`statement`)."""
    words, expected = normalise(response).split(), normalise(value).split()
    return (words[:len(expected)] if statement else words) == expected


def score_fact(doc: dict, results: list[str], statement: bool = False) -> dict[str, float]:
    """`exact_match` of the response (cut at its first stop) with the fact's value (`fact_match`)."""
    return {"exact_match": float(fact_match(results[0], doc["value"], statement))}
