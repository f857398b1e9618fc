"""The micro pretraining corpus: what the base model knows before any expert is trained.

The base learns the world's pieces, never the target formats: stories resolved in prose, the
arithmetic tables, programs under a comment that says what they print, and number copying. The
labels of the skills and tasks ("Question:", "Answer:", "Instruction:", "Program:") never occur,
so the base scores near zero on every task and each expert has a format to learn; and no document
maps a story to a program, so only a composition of the two skills solves `math_code`. With
`manual_entry` in the mix, the base also reads the manuals of the pretraining products (never a
question about them, never a proprietary product).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from benchmark import hashing
from benchmark.errors import UserError
from benchmark.micro import manual, world

PHRASE = {"add": "{a} plus {b}", "sub": "{a} minus {b}", "mul": "{a} times {b}", "div": "{a} divided by {b}"}


def story_resolved(rng: random.Random) -> str:
    """A small-number story and its outcome in prose (latent math)."""
    return world.story_prose(world.draw_situation(rng, (1, 1)))


def story_restated(rng: random.Random) -> str:
    """A story with numbers of any size, then its computation restated in words (copying + reading)."""
    s = world.draw_situation(rng, (1, 4))
    told = world.story(s).rsplit(". ", 1)[0] + "."
    return f"{told} That is {PHRASE[s.op].format(a=s.a, b=s.b)}."


def arithmetic_fact(rng: random.Random) -> str:
    """Lines of the one-digit tables, the facts the math skill recalls."""
    lines = []
    for _ in range(rng.randint(3, 6)):
        s = world.draw_situation(rng, (1, 1))
        lines.append(f"{s.expression} = {s.answer}")
    return "\n".join(lines)


def commented_program(rng: random.Random) -> str:
    """A program under a comment that says in words what it prints (latent code)."""
    s = world.draw_situation(rng, (1, 4))
    return f"# {PHRASE[s.op].format(a=s.a, b=s.b)}\n{world.program(s)}"


def copy_list(rng: random.Random) -> str:
    """Numbers listed, then listed again: the copying that programs with large numbers need."""
    numbers = [str(world.draw_number(rng, (1, 4))) for _ in range(rng.randint(2, 5))]
    return f"The numbers are {', '.join(numbers)}. Again: {', '.join(numbers)}."


def manual_entry(rng: random.Random) -> str:
    """A manual entry of a pretraining product (benchmark.micro.manual): facts in prose, phrasings
    and order drawn per document, never a question. The `qa` skill's knowledge; 0 by default."""
    return manual.manual_entry(rng.choice(manual.pretraining_products()), rng)


# A kind of weight 0 is never drawn and draws nothing from the stream: adding one at the end keeps
# every other suite's corpus (and its base) as it was.
DOCUMENT_KINDS: dict[str, tuple[Callable[[random.Random], str], float]] = {
    "story_resolved": (story_resolved, 0.25),
    "story_restated": (story_restated, 0.2),
    "arithmetic_fact": (arithmetic_fact, 0.15),
    "commented_program": (commented_program, 0.25),
    "copy_list": (copy_list, 0.15),
    "manual_entry": (manual_entry, 0.0),
}


def documents(n: int, seed: int, mix: dict[str, float] | None = None) -> Iterator[str]:
    """`n` documents drawn from the kinds above with their weights (overridden by `mix`),
    deterministic given the seed."""
    unknown = set(mix or {}) - set(DOCUMENT_KINDS)
    if unknown:
        raise UserError(f"unknown corpus document kinds {sorted(unknown)}; known: {sorted(DOCUMENT_KINDS)}")
    rng = random.Random(seed)
    makers = [maker for maker, _ in DOCUMENT_KINDS.values()]
    weights = [(mix or {}).get(kind, weight) for kind, (_, weight) in DOCUMENT_KINDS.items()]
    for _ in range(n):
        yield rng.choices(makers, weights)[0](rng)


def digest(n: int, seed: int, mix: dict[str, float] | None = None) -> str:
    """A digest of the corpus itself: part of the base's recipe hash, so a change of any document
    maker gives another hash without anyone remembering to bump a version (a few seconds)."""
    return hashing.text_digest(documents(n, seed, mix))
