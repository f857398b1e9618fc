"""Data builder for the `math` skill: stories read into an expression and its value.

Training stories have one- or two-digit numbers, as GSM8K's have numbers of several sizes: the
expert learns to read the operands off the story whatever their size (the part `math_code` needs
from it), not where a one-digit story keeps them. Evaluation stories have one-digit numbers, whose
answers the base can recall (it learned the one-digit tables), so the score measures reading the
story and answering, not the arithmetic that no corpus document teaches.

`product_problems` (a suite's `task_options: {math: {product_problems: 0.25}}`) makes that share of
the training examples the manual world's word problems about pretraining products, answered with
the recalled fact in the expression ("Tess has 22 Mase machines. How many fans ...?" -> "22 * 4 =
88."): using a fact inside a story is then part of the math skill, as reading the story is, and
`manual_math_code` asks it of proprietary products, whose facts only the manual expert knows
(issue 11: with no skill that ever uses a recalled fact in a story, every method, data mixing
included, scored at most 0.02 there). The products are the `qa` skill's (`pretrain_qa`), so the
held-out pretraining products stay unasked by every skill; evaluation is unchanged.

`stated_facts` (with `product_problems`) answers those problems by first stating the fact as the
manual states it ("The Mase has 4 fans. 22 * 4 = 88. ..."). Why: with the fact recalled straight
into the expression (issue 11's second design), even data mixing recalled a proprietary fact inside
a story about as often as guessing would; a stated fact turns recall into the completion the
manual expert is trained on (the manual's own sentence) and the expression into copying it.
"""

from __future__ import annotations

import random

from benchmark.errors import UserError
from benchmark.micro import manual, world
from tasks._common.synthetic import HELD_OUT, eval_docs, train_examples

TRAIN_DIGITS = (1, 2)
EVAL_DIGITS = (1, 1)
EVAL_SALT = 7_919  # eval documents come from another stream than training ones
PRODUCT_SALT = 104_729  # the product problems' own random stream


def prompt(s: world.Situation) -> str:
    return question(world.story(s))


def question(story: str) -> str:
    return f"Question: {story}\nAnswer:"


def answer(s: world.Situation) -> str:
    return " " + world.worked_answer(s)


def build_train(n: int, seed: int, digits: tuple[int, int] = TRAIN_DIGITS, product_problems: float = 0.0,
                stated_facts: bool = False) -> list[dict]:
    if not 0.0 <= product_problems <= 1.0:
        raise UserError(f"task 'math': product_problems is a share of the training examples, in [0, 1]; got {product_problems}")
    # a suite's `digits` option sizes training and eval alike; by default eval stories are smaller
    sizes = {EVAL_DIGITS} if tuple(digits) == TRAIN_DIGITS else {tuple(digits), EVAL_DIGITS}
    held_out = {d["prompt"] for size in sizes for d in build_eval(HELD_OUT, seed, size)}
    n_products = round(n * product_problems)
    examples = train_examples(n - n_products, seed, tuple(digits), prompt, answer, held_out)
    if not n_products:
        return examples
    rng = random.Random(seed * 31 + PRODUCT_SALT)
    pool = manual.products()["pretrain_qa"]
    for i in range(n_products):  # the four operations equally often, as in the task that needs them
        problem = manual.draw_problem(rng, pool, world.OPS[i % len(world.OPS)])
        stated = problem.statement + " " if stated_facts else ""
        examples.append({"prompt": question(problem.story()),
                         "completion": " " + stated + world.worked(problem.expression, problem.answer)})
    rng.shuffle(examples)
    return examples


def build_eval(n: int, seed: int, digits: tuple[int, int] = EVAL_DIGITS, product_problems: float = 0.0,
               stated_facts: bool = False) -> list[dict]:
    """The plain stories whatever `product_problems` and `stated_facts` are (training options,
    passed to both builders)."""
    return eval_docs(n, seed, EVAL_SALT, tuple(digits), prompt, answer)
