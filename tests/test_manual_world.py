"""The manual world's data contracts: who may see which product, and in which format.

`manual_qa` tests composition only if the base knows neither the proprietary facts nor the question
format, the manual expert knows the facts but was never asked, the qa expert knows the format but
never saw a proprietary product, and nothing anywhere asks a question about a proprietary product.
"""

from __future__ import annotations

import re

import pytest

from benchmark.micro import manual, world
from benchmark.micro.corpus import documents
from tasks._common.facts import fact_match, normalise
from tasks.code import data as code_data
from tasks.manual import data as manual_data
from tasks.manual_math_code import data as mmc_data
from tasks.manual_qa import data as manual_qa_data
from tasks.math import data as math_data
from tasks.qa import data as qa_data

SETS = manual.products()
WORD = re.compile(r"[A-Z][a-z]+")


def names_in(text: str, pool: tuple[manual.Product, ...]) -> set[str]:
    names = {p.name for p in pool}
    return {w for w in WORD.findall(text) if w in names}


def test_product_sets_are_disjoint_fixed_and_clash_with_no_other_word():
    names = [p.name for group in SETS.values() for p in group]
    assert len(names) == len(set(names)) == manual.N_PRETRAIN_QA + manual.N_PRETRAIN_HELDOUT + manual.N_PROPRIETARY
    assert not set(names) & set(world.NAMES)
    manual.products.cache_clear()
    assert manual.products() == SETS  # drawn from the world's own seed, the same every time
    for attribute in manual.ATTRIBUTES:  # every value of a fact is one the world allows
        assert {getattr(p, attribute) for g in SETS.values() for p in g} <= set(manual.VALUES[attribute])


def test_pretraining_reads_only_pretraining_manuals_and_never_a_question():
    docs = list(documents(4000, 0, {"manual_entry": 0.5}))
    entries = [d for d in docs if names_in(d, manual.pretraining_products())]
    assert len(entries) > 1100  # a weight of 0.5 beside the others' 1.0: a third of 4,000
    seen = set().union(*(names_in(d, manual.pretraining_products()) for d in entries))
    assert len(seen) > 0.9 * len(manual.pretraining_products())  # both pretraining sets are read
    for doc in docs:
        assert not names_in(doc, SETS["proprietary"]), doc
        assert "Q:" not in doc and "A:" not in doc and "?" not in doc, doc


def test_a_manual_entry_tells_every_fact_once_with_the_full_name_in_each_sentence():
    product = SETS["proprietary"][0]
    entries = {e["completion"] for e in manual_data.build_train(400, 0) if product.name in e["completion"]}
    assert len(entries) > 1  # phrasings and sentence order vary from entry to entry
    for entry in entries:
        sentences = entry.split(". ")
        assert len(sentences) == len(manual.ATTRIBUTES)
        assert all(product.name in s for s in sentences)
        for attribute in manual.ATTRIBUTES:
            assert any(s.rstrip(".") + "." in [t.format(p=product.name, v=product.value(attribute))
                                               for t in manual.STATEMENTS[attribute]] for s in sentences)


def test_manual_expert_sees_only_proprietary_manuals_and_no_question():
    train = manual_data.build_train(800, 0)
    assert all(ex["prompt"] == "" for ex in train)
    text = " ".join(ex["completion"] for ex in train)
    assert names_in(text, SETS["proprietary"]) == {p.name for p in SETS["proprietary"]}
    assert not names_in(text, manual.pretraining_products())
    assert "?" not in text and "Q:" not in text


def test_qa_expert_is_asked_about_pretrain_qa_products_only_and_evaluated_on_held_out_ones():
    train = qa_data.build_train(4000, 0)
    asked = set().union(*(names_in(ex["prompt"], manual.pretraining_products() + SETS["proprietary"])
                          for ex in train))
    assert asked == {p.name for p in SETS["pretrain_qa"]}
    by_name = {p.name: p for p in SETS["pretrain_qa"]}
    for ex in train[:200]:  # the answer is the fact
        (name,) = names_in(ex["prompt"], SETS["pretrain_qa"])
        attribute = next(a for a, q in manual.QUESTIONS.items() if q.format(p=name) in ex["prompt"])
        assert ex["completion"] == " " + by_name[name].value(attribute)
    held = set().union(*(names_in(d["prompt"], SETS["pretrain_heldout"]) for d in qa_data.build_eval(200, 0)))
    assert held and not held & asked


def test_no_skill_data_asks_about_a_proprietary_product_or_names_one_outside_the_manual():
    for builder in (qa_data.build_train, math_data.build_train, code_data.build_train):
        for ex in builder(2000, 0):
            assert not names_in(ex["prompt"] + ex["completion"], SETS["proprietary"]), ex
    for ex in math_data.build_train(500, 0) + code_data.build_train(500, 0):
        assert not names_in(ex["prompt"] + ex["completion"], manual.pretraining_products())


def test_manual_qa_asks_the_qa_format_about_proprietary_facts_only():
    docs = manual_qa_data.build_eval(200, 0)
    assert len({d["prompt"] for d in docs}) == 200
    by_name = {p.name: p for p in SETS["proprietary"]}
    for d in docs:
        (name,) = names_in(d["prompt"], SETS["proprietary"])
        assert d["prompt"] == manual.question_prompt(by_name[name], d["category"])
        assert d["value"] == by_name[name].value(d["category"])
    assert {d["category"] for d in docs} == set(manual.ATTRIBUTES)


def test_cloze_prompts_have_one_reading():
    """A cloze prefix that another statement also starts with ("The Segevu is" -> "made in") would
    score a right completion as wrong."""
    product = SETS["proprietary"][0]
    for d in manual_data.build_eval(300, 0):
        (name,) = names_in(d["prompt"], SETS["proprietary"])
        readings = [a for a, ts in manual.STATEMENTS.items() for t in ts
                    if t.format(p=name, v="").startswith(d["prompt"] + " ")]
        assert readings == [d["category"]] * len(readings) and readings, d
    assert manual.cloze(product, "colour", 0)[0] != f"The {product.name} is"


def test_manual_math_code_answers_are_the_programs_with_the_manual_fact():
    docs = mmc_data.build_eval(200, 0)
    by_name = {p.name: p for p in SETS["proprietary"]}
    assert {d["category"] for d in docs} == set(world.OPS)
    assert all(sum(d["category"] == op for d in docs) == 50 for op in world.OPS)
    for d in docs:
        (name,) = names_in(d["prompt"], SETS["proprietary"])
        fact = int(by_name[name].value(manual.PROBLEM_FACT[d["category"]]))
        comment, program = d["target"].split("\n")
        expression = program.removeprefix("print(").removesuffix(")")
        assert str(fact) in expression.split() and str(fact) not in d["prompt"].split()
        assert eval(expression) == d["answer"] and float(d["answer"]).is_integer()  # exact division
        assert d["prompt"].startswith("Question: ") and d["prompt"].endswith("\nProgram:\n")
        # the comment is the manual's own sentence for the fact, the one its cloze eval asks
        prefix, value = manual.cloze(by_name[name], manual.PROBLEM_FACT[d["category"]], 0)
        assert comment.startswith(f"# {prefix}{value}") and value == f" {fact}" and d["program_prefix"] == ""


def test_comment_first_opens_the_program_in_the_prompt_and_the_sandbox_runs_opening_and_completion():
    """`comment_first`: the prompt ends with the program's comment sign and the executed program is
    that sign and the completion; a completion that is right only without the sign fails."""
    from tasks._common.filters import ExecuteProgram

    plain, opened = mmc_data.build_eval(8, 0), mmc_data.build_eval(8, 0, comment_first=True)
    assert [d["prompt"] + "#" for d in plain] == [d["prompt"] for d in opened]
    assert [d["program_prefix"] + d["target"] for d in opened] == [d["target"] for d in plain]
    doc = opened[0]
    runs = ExecuteProgram(timeout_s=5.0).apply(
        [[doc["target"]], [doc["target"].split("\n")[1]], [""]], [doc, doc, doc])
    right, wrong, blank = (r[0] for r in runs)
    assert right["ok"] and right["value"] == doc["answer"] and right["program"].startswith("# The ")
    assert wrong["program"].startswith("#print(") and wrong["value"] is None  # the sign comments it out
    assert blank["error"] == "empty program"


def test_chance_level_is_the_commonest_value_share():
    levels = {a: manual.chance_level(a) for a in manual.ATTRIBUTES}
    assert all(1 / len(manual.VALUES[a]) <= levels[a] < 0.25 for a in manual.ATTRIBUTES), levels


@pytest.mark.parametrize(("response", "value", "statement", "expected"), [
    (" Porto", "Porto", False, True),
    (" porto.", "Porto", False, True),
    (" Porto Alegre", "Porto", False, False),
    (" 45\nQ: more", "45", False, True),
    (" 45 hours", "45", True, True),
    (" 45 hours", "45", False, False),
    (" 459 hours", "45", True, False),
    ("", "red", False, False),
])
def test_fact_answers_are_compared_after_normalisation(response, value, statement, expected):
    assert fact_match(response, value, statement) is expected
    assert normalise("  'Lima'. ") == "lima"


def test_math_product_problems_recall_pretrain_qa_facts_into_the_expression():
    """`math: {product_problems: p}`: that share of the math skill's training is word problems about
    the qa skill's pretraining products, answered with the recalled fact; no proprietary product and
    no held-out one is ever named, the rest of the data and the eval are the plain stories."""
    from benchmark.errors import UserError

    plain = math_data.build_train(400, 0)
    mixed = math_data.build_train(400, 0, product_problems=0.25)
    by_name = {p.name: p for p in SETS["pretrain_qa"]}
    problems = [ex for ex in mixed if names_in(ex["prompt"], manual.pretraining_products())]
    assert len(mixed) == 400 and len(problems) == 100
    rest = [ex for ex in mixed if ex not in problems]  # the first 300 plain stories, shuffled in
    assert sorted(map(str, rest)) == sorted(map(str, plain[:300])) and rest != plain[:300]
    ops = []
    for ex in problems:
        (name,) = names_in(ex["prompt"], SETS["pretrain_qa"])
        op = next(op for op, template in manual.PROBLEMS.items()
                  if re.fullmatch(re.escape(template).replace(r"\{name\}", r"\w+").replace(r"\{n\}", r"\d+")
                                  .replace(r"\{p\}", name), ex["prompt"].removeprefix("Question: ").removesuffix("\nAnswer:")))
        ops.append(op)
        fact = by_name[name].value(manual.PROBLEM_FACT[op])
        expression, value = re.fullmatch(r" (.+) = (-?\d+)\. The answer is \2\.", ex["completion"]).groups()
        assert fact in expression.split() and fact not in ex["prompt"].split() and eval(expression) == int(value)
    assert all(ops.count(op) == 25 for op in world.OPS)
    assert not any(names_in(ex["prompt"] + ex["completion"], SETS["proprietary"] + SETS["pretrain_heldout"])
                   for ex in mixed)
    assert math_data.build_eval(50, 0, product_problems=0.25) == math_data.build_eval(50, 0)
    # `stated_facts`: the same problems, each answer opened by the fact in the manual's own words
    stated = math_data.build_train(400, 0, product_problems=0.25, stated_facts=True)
    assert [ex["prompt"] for ex in stated] == [ex["prompt"] for ex in mixed]
    for ex, inline in zip(stated, mixed):
        if ex in problems or inline not in problems:
            assert ex == inline
            continue
        (name,) = names_in(ex["prompt"], SETS["pretrain_qa"])
        said = [manual.statement(by_name[name], a) for a in ("fans", "battery", "filter")]
        assert any(ex["completion"] == f" {s}{inline['completion']}" for s in said), ex
    assert math_data.build_eval(50, 0, stated_facts=True) == math_data.build_eval(50, 0)
    with pytest.raises(UserError, match="product_problems"):
        math_data.build_train(10, 0, product_problems=1.5)
