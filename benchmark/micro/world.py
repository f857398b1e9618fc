"""The synthetic world shared by the micro corpus and the micro skills and tasks.

One generator of small "situations" (someone has some items, something happens, a quantity is
asked for) is rendered in several forms: a story in prose, a question with a worked answer (the
`math` skill), an instruction with a program (the `code` skill), and a question answered by a
program (the composite `math_code` task). Keeping the situation apart from its rendering is what
lets the composite task need exactly the two skills and nothing else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ["Ann", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivy", "Jon", "Kim", "Leo",
         "Mia", "Ned", "Olga", "Pam", "Quinn", "Rosa", "Sam", "Tess", "Uma", "Vic", "Wes", "Zoe"]
ITEMS = ["apples", "books", "coins", "pens", "shells", "stamps", "cards", "eggs", "nails",
         "beads", "cups", "seeds", "bolts", "shirts", "tiles", "ropes"]
CONTAINERS = ["boxes", "bags", "crates", "jars", "baskets", "trays"]

# Four operations, equally often: a model that writes a program with the right numbers but cannot
# tell the operation from the story (a code expert alone) is right by chance one time in four.
OPS = ("add", "sub", "mul", "div")
SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def compute(op: str, a: int, b: int) -> int:
    """`a op b` in the world's integer arithmetic (divisions are drawn exact)."""
    return {"add": a + b, "sub": a - b, "mul": a * b, "div": a // b}[op]


@dataclass(frozen=True)
class Situation:
    """A two-number arithmetic situation and the words that dress it."""

    op: str
    a: int
    b: int
    name: str
    item: str
    container: str

    @property
    def answer(self) -> int:
        return compute(self.op, self.a, self.b)

    @property
    def expression(self) -> str:
        return f"{self.a} {SYMBOL[self.op]} {self.b}"


def draw_number(rng: random.Random, digits: tuple[int, int]) -> int:
    """A number with between digits[0] and digits[1] digits, uniform over the digit count."""
    n_digits = rng.randint(*digits)
    low = 10 ** (n_digits - 1) if n_digits > 1 else 1
    return rng.randint(low, 10**n_digits - 1)


def draw_situation(rng: random.Random, digits: tuple[int, int], op: str | None = None) -> Situation:
    """A situation whose numbers have `digits` digits (the multiplier stays one or two digits); a
    division shares `digits` items per container among a one-digit number of them, so it is exact
    and its answer has the size the other operations' operands have."""
    op = op or rng.choice(OPS)
    a, b = draw_number(rng, digits), draw_number(rng, digits)
    if op == "sub" and b > a:
        a, b = b, a
    if op == "sub" and a == b:
        a += 1
    if op == "mul":
        b = rng.randint(2, 9) if digits[1] <= 2 else rng.randint(2, 99)
    if op == "div":
        b = rng.randint(2, 9)
        a = a * b
    return Situation(op, a, b, rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS))


def story(s: Situation) -> str:
    """The situation told as a question, as in GSM8K-style word problems."""
    if s.op == "add":
        return (f"{s.name} has {s.a} {s.item}. {s.name} gets {s.b} more {s.item}. "
                f"How many {s.item} does {s.name} have now?")
    if s.op == "sub":
        return (f"{s.name} has {s.a} {s.item}. {s.name} gives away {s.b} {s.item}. "
                f"How many {s.item} does {s.name} have left?")
    if s.op == "mul":
        return (f"{s.name} has {s.a} {s.container}. Each of the {s.container} holds {s.b} {s.item}. "
                f"How many {s.item} does {s.name} have in all?")
    return (f"{s.name} has {s.a} {s.item}. {s.name} puts them into {s.b} {s.container}, the same number "
            f"in each. How many {s.item} are in each of the {s.container}?")


def story_prose(s: Situation) -> str:
    """The situation told and resolved in prose: the base's latent knowledge of stories."""
    told = story(s).rsplit(". ", 1)[0] + "."
    if s.op == "div":
        return f"{told} So there are {s.answer} {s.item} in each of the {s.container}."
    return f"{told} So {s.name} has {s.answer} {s.item}."


# Several phrasings per operation, the operands at different places, as in instruction-tuning data
# (CodeAlpaca): a code expert trained on one template learns where that template puts its numbers,
# not how to find the operands of a request, and then cannot compose with the math skill.
INSTRUCTIONS = {
    "add": ["Write a program that prints the sum of {a} and {b}.", "Print {a} plus {b}.",
            "Add {a} and {b}, then print the result.", "Start from {a}, add {b} to it and print the total.",
            "Given the numbers {a} and {b}, print their sum."],
    "sub": ["Write a program that prints {a} minus {b}.", "Print {a} take away {b}.",
            "Subtract {b} from {a} and print the result.",
            "Start from {a}, remove {b} from it and print what is left.",
            "Given the numbers {a} and {b}, print the first minus the second."],
    "mul": ["Write a program that prints the product of {a} and {b}.", "Print {a} times {b}.",
            "Multiply {a} by {b} and print the result.", "Take {b} groups of {a} and print the total.",
            "Given the numbers {a} and {b}, print their product."],
    "div": ["Write a program that prints {a} divided by {b}.", "Print {a} over {b}.",
            "Divide {a} by {b} and print the result.", "Split {a} into {b} equal parts and print the size of each.",
            "Given the numbers {a} and {b}, print the first divided by the second."],
}
N_PHRASINGS = len(INSTRUCTIONS["add"])


def instruction(s: Situation, phrasing: int = 0) -> str:
    """The bare computation asked as a programming instruction (no story, no items)."""
    return INSTRUCTIONS[s.op][phrasing % N_PHRASINGS].format(a=s.a, b=s.b)


def program(s: Situation) -> str:
    """The reference program for the situation: it prints the answer when executed."""
    return f"print({s.expression})"


def worked_answer(s: Situation) -> str:
    """The math skill's worked answer: the expression read off the story, then its value."""
    return worked(s.expression, s.answer)


def worked(expression: str, value: int) -> str:
    """The worked-answer form, for any story whose expression is known (also the manual's problems)."""
    return f"{expression} = {value}. The answer is {value}."
