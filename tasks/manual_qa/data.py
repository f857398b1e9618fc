"""Data builder for `manual_qa`: the `qa` skill's questions, about the proprietary products.

The base knows neither the products nor the format; the manual expert knows the facts but was
never asked a question; the qa expert knows the format but not the facts (it scores about
`manual.chance_level` per attribute by guessing the commonest value).
"""

from __future__ import annotations

from benchmark.micro import manual
from tasks._common.facts import question_docs

EVAL_SALT = 9_241


def build_eval(n: int, seed: int) -> list[dict]:
    return question_docs(manual.products()["proprietary"], n, seed, EVAL_SALT)
