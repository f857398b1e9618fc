"""The manual world of micro: products that exist only here, their facts, and the ways to tell them.

The second headline task of LoRA Soups is closed-book QA over a proprietary manual: one LoRA learns
a manual's text, another how to answer questions, and the merge answers questions about the manual
with no context. Its miniature needs facts that no model can know from elsewhere, so the products
are invented (pronounceable names, drawn once from a fixed seed) and each has a few attributes:

- `colour`, `city`: categorical facts, the QA task's bread and butter;
- `fans`, `battery` (hours), `filter` (weeks): numbers, which `manual_math_code` computes with.

Three disjoint sets of products, fixed by the world (not by a suite's seeds, since the base and
every expert must agree on them):

- `pretrain_qa`: in the base's pretraining corpus as manual prose, and the subjects of the `qa`
  skill's training questions;
- `pretrain_heldout`: in the corpus as prose; the `qa` skill's own eval asks about them, so it
  measures whether answering transfers to facts the expert never saw asked (Physics of Language
  Models 3.1: only with knowledge augmentation in pretraining);
- `proprietary`: only in the manual expert's training text; the composite tasks ask about them.

A fact is told in several phrasings, the sentences of a manual entry are shuffled and the full
name is repeated in every sentence (no pronouns): the knowledge augmentation that makes facts
extractable at small scale (arXiv 2309.14316). Each manual entry is one training window: one
product, one phrasing per attribute. The question format ("Q:" / "A:") appears nowhere but in the
`qa` skill's data and the tasks' prompts.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from benchmark.micro import world

WORLD_SEED = 20_251_201  # the products are part of the world: never a suite's seed
N_PRETRAIN_QA = 200
N_PRETRAIN_HELDOUT = 100
N_PROPRIETARY = 100

COLOURS = ("red", "blue", "green", "black", "white", "yellow", "grey", "orange")
CITIES = ("Lyon", "Oslo", "Porto", "Quito", "Kyoto", "Perth", "Accra", "Lima", "Turin", "Dakar")
FANS = tuple(range(2, 10))
BATTERY_HOURS = tuple(range(20, 100))
FILTER_WEEKS = tuple(range(2, 10))
ATTRIBUTES = ("colour", "city", "fans", "battery", "filter")
VALUES: dict[str, tuple] = {"colour": COLOURS, "city": CITIES, "fans": FANS, "battery": BATTERY_HOURS,
                            "filter": FILTER_WEEKS}

_ONSETS = ("b", "br", "d", "dr", "f", "g", "k", "kl", "l", "m", "n", "p", "pl", "r", "s", "st", "t",
           "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "n", "r", "x", "l", "s")


@dataclass(frozen=True)
class Product:
    """An invented product and its facts (the manual's content)."""

    name: str
    colour: str
    city: str
    fans: int
    battery: int  # hours on one charge
    filter: int  # weeks between filter changes

    def value(self, attribute: str) -> str:
        return str(getattr(self, attribute))


def _name(rng: random.Random) -> str:
    syllables = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 3))]
    return ("".join(syllables) + rng.choice(_CODAS)).capitalize()


@functools.cache
def products() -> dict[str, tuple[Product, ...]]:
    """The world's products by set (`pretrain_qa`, `pretrain_heldout`, `proprietary`), fixed."""
    rng = random.Random(WORLD_SEED)
    taken = {n.lower() for n in world.NAMES} | {w.rstrip("s") for w in world.ITEMS + world.CONTAINERS}
    total = N_PRETRAIN_QA + N_PRETRAIN_HELDOUT + N_PROPRIETARY
    made: list[Product] = []
    while len(made) < total:
        name = _name(rng)
        if name.lower() in taken or len(name) < 4:
            continue
        taken.add(name.lower())
        made.append(Product(name, rng.choice(COLOURS), rng.choice(CITIES), rng.choice(FANS),
                            rng.choice(BATTERY_HOURS), rng.choice(FILTER_WEEKS)))
    return {"pretrain_qa": tuple(made[:N_PRETRAIN_QA]),
            "pretrain_heldout": tuple(made[N_PRETRAIN_QA:N_PRETRAIN_QA + N_PRETRAIN_HELDOUT]),
            "proprietary": tuple(made[N_PRETRAIN_QA + N_PRETRAIN_HELDOUT:])}


def pretraining_products() -> tuple[Product, ...]:
    return products()["pretrain_qa"] + products()["pretrain_heldout"]


# The manual's register: several phrasings of each fact, the product's full name in each.
STATEMENTS: dict[str, tuple[str, ...]] = {
    "colour": ("The {p} is {v}.", "Every {p} is painted {v}.", "The colour of the {p} is {v}."),
    "city": ("The {p} is made in {v}.", "Each {p} is built in {v}.", "The factory of the {p} is in {v}."),
    "fans": ("The {p} has {v} fans.", "Inside the {p} there are {v} fans.", "The {p} is cooled by {v} fans."),
    "battery": ("The battery of the {p} lasts {v} hours.", "The {p} runs for {v} hours on one charge.",
                "On a full battery the {p} works for {v} hours."),
    "filter": ("The filter of the {p} is changed every {v} weeks.", "Change the filter of the {p} every {v} weeks.",
               "Every {v} weeks the {p} needs a new filter."),
}
N_PHRASINGS = 3


def manual_entry(product: Product, rng: random.Random) -> str:
    """One manual entry: every fact once, each in a phrasing drawn from `rng`, in shuffled order."""
    sentences = [rng.choice(STATEMENTS[a]).format(p=product.name, v=product.value(a)) for a in ATTRIBUTES]
    rng.shuffle(sentences)
    return " ".join(sentences)


def _prefix(template: str) -> str:
    return template.split("{v}")[0].rstrip()


@functools.cache
def cloze_phrasings(attribute: str) -> tuple[str, ...]:
    """The attribute's statements whose text before the value is no prefix of another statement
    ("The {p} is" would be completed as well by "made in Lyon"): the ones a cloze can ask."""
    others = [_prefix(t) for a, ts in STATEMENTS.items() for t in ts if a != attribute]
    return tuple(t for t in STATEMENTS[attribute] if not any(o.startswith(_prefix(t)) for o in others))


def statement(product: Product, attribute: str) -> str:
    """The fact in the manual's own words, in the first phrasing a cloze can ask ("The Mase has 4
    fans."): the sentence a model that learned the manual completes most surely once it has
    written the words before the value."""
    return cloze_phrasings(attribute)[0].format(p=product.name, v=product.value(attribute))


def cloze(product: Product, attribute: str, phrasing: int = 0) -> tuple[str, str]:
    """A statement of the manual cut before its value: (prefix, " value"), the `manual` skill's eval."""
    usable = cloze_phrasings(attribute)
    return _prefix(usable[phrasing % len(usable)]).format(p=product.name), " " + product.value(attribute)


# The closed-book question format: in no pretraining document and in no manual.
QUESTIONS = {
    "colour": "What colour is the {p}?",
    "city": "Where is the {p} made?",
    "fans": "How many fans does the {p} have?",
    "battery": "For how many hours does the battery of the {p} last?",
    "filter": "Every how many weeks is the filter of the {p} changed?",
}


def question_prompt(product: Product, attribute: str) -> str:
    return f"Q: {QUESTIONS[attribute].format(p=product.name)}\nA:"


def chance_level(attribute: str) -> float:
    """The accuracy of guessing the attribute's most frequent value among the pretraining products:
    what a model that knows the format and none of the facts can reach."""
    values = [p.value(attribute) for p in pretraining_products()]
    return max(values.count(v) for v in set(values)) / len(values)


# Word problems whose second number is a fact of the manual (`manual_math_code`): the operation is
# read off the story (math), the fact recalled (manual), the result computed by a program (code).
PROBLEMS = {
    "add": ("{name} has {n} spare fans. {name} takes the fans out of a {p} and adds them. "
            "How many fans does {name} have now?"),
    "sub": ("The battery of the {p} of {name} is full. {name} uses the {p} for {n} hours. "
            "How many hours of battery are left?"),
    "mul": "{name} has {n} {p} machines. How many fans do the machines have in all?",
    "div": ("{name} runs a {p} for {n} weeks and changes its filter as the manual says. "
            "How many times is the filter changed?"),
}
PROBLEM_FACT = {"add": "fans", "sub": "battery", "mul": "fans", "div": "filter"}


@dataclass(frozen=True)
class Problem:
    """A manual word problem: the story's own number `n`, the product whose fact completes it."""

    op: str
    n: int
    product: Product
    name: str

    @property
    def fact(self) -> int:
        return int(self.product.value(PROBLEM_FACT[self.op]))

    @property
    def statement(self) -> str:
        """The fact the problem needs, stated as the manual states it."""
        return statement(self.product, PROBLEM_FACT[self.op])

    @property
    def operands(self) -> tuple[int, int]:
        """The story's number and the fact, in the order the operation takes them."""
        return (self.fact, self.n) if self.op == "sub" else (self.n, self.fact)

    @property
    def answer(self) -> int:
        return world.compute(self.op, *self.operands)

    @property
    def expression(self) -> str:
        left, right = self.operands
        return f"{left} {world.SYMBOL[self.op]} {right}"

    def story(self) -> str:
        return PROBLEMS[self.op].format(name=self.name, n=self.n, p=self.product.name)


def draw_problem(rng: random.Random, pool: tuple[Product, ...], op: str | None = None) -> Problem:
    """A problem about a product of `pool`; numbers sized like `math_code`'s (two digits), so the
    answer needs the program, and every division is exact."""
    op = op or rng.choice(world.OPS)
    product = rng.choice(pool)
    if op == "sub":
        n = rng.randint(1, product.battery - 1)
    elif op == "div":
        n = product.filter * rng.randint(2, 9)
    else:
        n = rng.randint(10, 99)
    return Problem(op, n, product, rng.choice(world.NAMES))
