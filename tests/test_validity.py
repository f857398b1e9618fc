"""`soupbench validate`: the bar's figures, Kendall tau against scipy, and the exit code."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pytest
import torch
import yaml
from scipy.stats import kendalltau
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.storage import RunRecord, ScoreRecord, open_store
from benchmark.taskinfo import TASKS
from benchmark.validity import assess, kendall_tau, rank_agreement


@pytest.mark.parametrize("seed", range(6))
def test_kendall_tau_matches_scipy(seed):
    rng = random.Random(seed)
    x = [rng.choice([0.0, 0.1, 0.2, 0.5]) for _ in range(9)]
    y = [rng.choice([0.0, 0.1, 0.3]) for _ in range(9)]
    assert kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)


def grid(good: bool) -> dict[tuple[str, str, int], float]:
    """Scores for a suite that meets the bar (good) or whose experts already solve the composite."""
    scores = {}
    for seed in range(3):
        jitter = 0.01 * seed
        table = {
            "base": {"math": 0.05, "code": 0.0, "math_code": 0.0},
            "expert-math": {"math": 0.9, "code": 0.0, "math_code": 0.05 if good else 0.3},
            "expert-code": {"math": 0.0, "code": 0.95, "math_code": 0.1},
            "task_arithmetic": {"math": 0.6, "code": 0.7, "math_code": 0.35 + jitter},
            "cat": {"math": 0.8, "code": 0.8, "math_code": 0.5 + jitter},
        }
        for method, row in table.items():
            for task, value in row.items():
                scores[(method, task, seed)] = value
    return scores


def test_assess_passes_a_good_suite_and_names_what_fails_in_a_bad_one():
    tasks = [TASKS.get(t) for t in ("math", "code", "math_code")]
    good = assess(grid(True), tasks)
    assert all(tv.ok for tv in good)
    composite = good[2]
    assert composite.figures["best merge (cat)"] == pytest.approx(0.51)
    assert composite.figures["mean Kendall tau across seeds"] == pytest.approx(1.0)
    assert good[0].figures["expert gain"] == pytest.approx(0.85)
    assert composite.figures["seed 2: best merge (cat)"] == pytest.approx(0.52)
    assert composite.figures["seed 0: best single (expert-code)"] == pytest.approx(0.1)
    bad = assess(grid(False), tasks)
    failing = [c.what for tv in bad for c in tv.checks if not c.ok]
    assert failing == ["expert-math <= 0.5 x best merge"]


def test_rank_agreement_is_mean_pairwise_tau():
    scores = {}
    orders = {0: [0.1, 0.2, 0.3], 1: [0.3, 0.2, 0.1], 2: [0.1, 0.3, 0.2]}
    for seed, values in orders.items():
        for method, value in zip("abc", values):
            scores[(method, "t", seed)] = value
    expected = sum(kendalltau(orders[a], orders[b]).statistic for a, b in itertools.combinations(range(3), 2)) / 3
    assert rank_agreement(scores, "t") == pytest.approx(expected)
    assert rank_agreement({k: v for k, v in scores.items() if k[2] == 0}, "t") is None


def fill(db, scores, suite="micro"):
    store = open_store(f"sqlite:///{db}")
    records = []
    for (method, task, seed), value in scores.items():
        records.append(RunRecord(
            suite=suite, method=method, method_params={}, task=task, seed=seed,
            scores=[ScoreRecord(TASKS.get(task).primary_metric, value, 0.01, 200, True)], samples=[],
            merge_seconds=0.0, eval_seconds=0.0, peak_memory_mb=0.0, output_rank=None, consumes="nothing",
            n_target_examples=None, base_fingerprint="b", expert_fingerprints={}, provenance={}, spec={}))
    store.save_runs(records)
    store.close()


@pytest.mark.parametrize("good, code", [(True, 0), (False, 1)])
def test_validate_command_exit_code(tmp_path, good, code):
    db = tmp_path / "v.db"
    fill(db, grid(good))
    result = CliRunner().invoke(app, ["validate", "--db", str(db)])
    assert result.exit_code == code, result.output
    assert "expert-math gain over base" in result.output and "0.850" in result.output


def test_validate_on_an_empty_grid_says_what_to_do(tmp_path):
    db = tmp_path / "empty.db"
    open_store(f"sqlite:///{db}").close()
    result = CliRunner().invoke(app, ["validate", "--db", str(db)])
    assert result.exit_code == 2 and "soupbench run" in result.output


def rebuilt(tmp_path, seed: int):
    """A copy of micro on another base seed, as a suite file of its own name."""
    import yaml

    from benchmark.suite import load_suite

    spec = load_suite("micro").model_dump(mode="json")
    spec["name"], spec["base"]["seed"] = f"micro-base{seed}", seed
    path = tmp_path / f"micro-base{seed}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("same_order, code", [(True, 0), (False, 1)])
def test_validate_across_base_builds_compares_their_rankings(tmp_path, same_order, code):
    db = tmp_path / "v.db"
    fill(db, grid(True))
    other = grid(True)
    if not same_order:  # the bar holds on the rebuilt base too, but merges and experts swap places
        for seed in range(3):
            other[("task_arithmetic", "math_code", seed)], other[("cat", "math_code", seed)] = 0.6, 0.4
            other[("expert-code", "math_code", seed)], other[("base", "math_code", seed)] = 0.0, 0.2
    fill(db, other, suite="micro-base1")
    result = CliRunner().invoke(app, ["validate", "--db", str(db), "--suite", "micro",
                                      "--suite", str(rebuilt(tmp_path, 1))])
    assert result.exit_code == code, result.output
    assert "math_code (composite), micro-base1" in result.output
    shown = re.search(r"micro / micro-base1\D*?(-?\d\.\d{3})", result.output)
    expected = 1.0 if same_order else kendalltau([0.0, 0.05, 0.1, 0.36, 0.51], [0.2, 0.05, 0.0, 0.6, 0.4]).statistic
    assert shown and float(shown.group(1)) == pytest.approx(expected, abs=1e-3)
    assert ("meets its bar on all 2 builds" in result.output) is same_order


def test_category_breakdown_pools_seeds_per_category(tmp_path):
    """scripts/category_breakdown.py: per method and category, right over scored, seed by seed."""
    from benchmark.results import open_readonly
    from benchmark.storage import SampleRecord

    module = load_script("category_breakdown")
    db = tmp_path / "c.db"
    store = open_store(f"sqlite:///{db}")
    right = {0: [True, False, True, True], 1: [False, False, True, False]}  # categories add, add, mul, mul
    for seed, marks in right.items():
        samples = [SampleRecord(i, "p", "g", "t", None, ok, {"category": "add" if i < 2 else "mul"})
                   for i, ok in enumerate(marks)]
        store.save_runs([RunRecord(
            suite="micro", method="cat", method_params={}, task="math_code", seed=seed,
            scores=[ScoreRecord("exec_accuracy", sum(marks) / 4, 0.1, 4, True)], samples=samples,
            merge_seconds=0.0, eval_seconds=0.0, peak_memory_mb=0.0, output_rank=None, consumes="nothing",
            n_target_examples=None, base_fingerprint="b", expert_fingerprints={}, provenance={}, spec={})])
    store.close()
    reader = open_readonly(f"sqlite:///{db}")
    table = module.breakdown(reader, "micro", "math_code")
    reader.close()
    assert sorted(table["cat"]["add"]) == [(0, 2, 1), (1, 2, 0)]
    assert sorted(table["cat"]["mul"]) == [(0, 2, 2), (1, 2, 1)]


@pytest.mark.parametrize("comment_first", [False, True])
def test_manual_problem_parts_tell_which_part_of_a_program_is_wrong(comment_first):
    """scripts/manual_problem_parts.py: each part is judged on its own, and a print under the
    comment sign (a `comment_first` prompt answered as a bare program) is no program."""
    from benchmark.micro import manual
    from tasks.manual_math_code import data as mmc_data

    module = load_script("manual_problem_parts")
    problem = manual.Problem("mul", 22, manual.products()["proprietary"][0], "Ann")
    fact = problem.fact
    doc = next(d for d in mmc_data.build_eval(40, 0, comment_first=comment_first) if d["category"] == "mul")
    doc = {**doc, "prompt": mmc_data.prompt(problem, comment_first),
           "target": mmc_data.reference_program(problem).removeprefix(doc["program_prefix"])}
    opening = "#" if comment_first else ""
    other = fact % 9 + 1  # another fan count
    cases = {  # generation (after the prompt's opening) -> the parts it has right
        doc["target"]: set(module.PARTS) - {"right"},
        f"{'' if comment_first else '#'} The {problem.product.name} has {other} fans.\nprint(22 * {fact})":
            {"op", "n", "fact", "stated"},
        f"{'' if comment_first else '#'} The {problem.product.name} has {fact} fans.\nprint(22 + {other})":
            {"n", "stated", "stated_right"},
        f"print(22 * {fact})": set() if comment_first else {"op", "n", "fact"},
    }
    for generation, expected in cases.items():
        got = module.program_parts(doc["prompt"], generation, doc["target"], False)
        assert {p for p, ok in got.items() if ok} == expected, (opening, generation, got)
    assert module.program_parts(doc["prompt"], doc["target"], doc["target"], True)["right"]


def load_script(name: str):
    import importlib.util
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parent.parent / "scripts"
    sys.path.insert(0, str(scripts))  # as when the script runs: its sibling scripts import
    try:
        spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(scripts))
    return module


@pytest.mark.parametrize("same_order", [True, False])
def test_sweep_records_keep_every_score_and_report_the_bar_across_builds(tmp_path, capsys, same_order):
    """scripts/micro_sweep.py: a build's record holds each (method, task, seed) score and the
    per-category counts; `--report` on two records applies the bar and compares the rankings."""
    import json

    from benchmark.suite import load_suite

    sweep = load_script("micro_sweep")
    paths = []
    for build in range(2):
        scores = grid(True)
        if build == 1 and not same_order:
            for seed in range(3):
                scores[("task_arithmetic", "math_code", seed)], scores[("cat", "math_code", seed)] = 0.6, 0.4
                scores[("expert-code", "math_code", seed)], scores[("base", "math_code", seed)] = 0.0, 0.2
        db = tmp_path / f"b{build}.db"
        suite = sweep.variant_suite(load_suite("micro"), {"name": f"micro-b{build}"})
        fill(db, scores, suite=suite.name)
        record = sweep.score_record(db, suite, {"name": suite.name}, 12.3)
        assert sweep.record_scores(json.loads(json.dumps(record))) == scores
        assert record["versions"]["peft"] and len(record["commit"]) == 40
        path = tmp_path / f"b{build}.scores.json"
        path.write_text(json.dumps(record))
        paths.append(path)
    assert sweep.report_records(paths) is same_order
    shown = capsys.readouterr().out
    assert "math_code: PASS" in shown and "seed 2: best merge (cat): 0.52" in shown
    tau = re.search(r"math_code: mean (-?\d\.\d+)", shown)
    expected = 1.0 if same_order else kendalltau([0.0, 0.05, 0.1, 0.36, 0.51], [0.2, 0.05, 0.0, 0.6, 0.4]).statistic
    assert tau and float(tau.group(1)) == pytest.approx(expected, abs=1e-3)


class ScriptedModel(torch.nn.Module):
    """A causal LM whose next token is set by rules on the text so far: a model whose answers at
    form_conflict's forks are known. `close` picks ")" over " =" after the whole expression;
    `operation(prompt)` names the operator it puts after the first operand."""

    def __init__(self, tokenizer, close: bool, operation):
        super().__init__()
        self.tokenizer, self.close, self.operation = tokenizer, close, operation

    def forward(self, input_ids):
        text = self.tokenizer.decode(input_ids[0])
        logits = torch.zeros(1, input_ids.shape[1], len(self.tokenizer))
        prompt = text[: text.index("Program:\n") + len("Program:\n")]
        tail = text[len(prompt):]
        if not tail:
            nxt = "print"
        elif re.fullmatch(r"print\(\d+ [-+*/] \d+", tail):
            nxt = ")" if self.close else " ="
        else:
            nxt = " " + {"add": "+", "sub": "-", "mul": "*", "div": "/"}[self.operation(prompt)]
        logits[0, -1, self.tokenizer.encode(nxt, add_special_tokens=False)[0]] = 40.0
        return type("Output", (), {"logits": logits})()


def test_form_conflict_reads_the_forks_of_a_model_with_known_answers():
    """scripts/form_conflict.py on scripted models: one that closes the program and picks each
    story's operation, one that goes on with " =" and always adds (right on the add stories only)."""
    from benchmark.micro.tokenizer import train_tokenizer
    from tasks.math_code.data import build_eval

    module = load_script("form_conflict")
    docs = build_eval(24, 0)
    tokenizer = train_tokenizer([d["prompt"] + d["target"] + " = 5. 1 + 2 - 3 * 4 / 5" for d in docs] * 20, 400)
    category = {d["prompt"]: d["category"] for d in docs}
    right = module.fork_probabilities(ScriptedModel(tokenizer, True, category.get), tokenizer, docs)
    assert right == pytest.approx({"first print": 1.0, "close": 1.0, "equals": 0.0, "op right": 1.0}, abs=1e-6)
    adds = sum(d["category"] == "add" for d in docs) / len(docs)
    assert 0 < adds < 1
    wrong = module.fork_probabilities(ScriptedModel(tokenizer, False, lambda p: "add"), tokenizer, docs)
    assert wrong == pytest.approx({"first print": 1.0, "close": 0.0, "equals": 1.0, "op right": adds}, abs=1e-6)
    with pytest.raises(ValueError, match="not one"):
        module.single_token(tokenizer, "Question: Uma")


def test_form_conflict_merges_are_the_weighted_sums_of_the_deltas():
    """form_conflict.merged_model against the deltas added by hand: [0, 0] is the base, [1, 0] the
    first expert's model, [0.5, 2] the weighted sum; the base itself is left as it was."""
    from benchmark.lora import Expert, lora_scale
    from tests.lora_fixtures import add_dense, random_factors, tiny_llama

    module = load_script("form_conflict")
    base = tiny_llama()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    generator = torch.Generator().manual_seed(3)
    names = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.up_proj"]
    experts = [Expert(n, {m: random_factors(tuple(base.get_submodule(m).weight.shape), 2, lora_scale(4, 2),
                                            generator, std=0.1) for m in names}) for n in ("math", "code")]
    for weights in ([0.0, 0.0], [1.0, 0.0], [0.5, 2.0]):
        expected = add_dense(base, {m: sum(w * e.modules[m].delta() for e, w in zip(experts, weights))
                                    for m in names})
        got = module.merged_model(base, experts, weights).state_dict()
        for key, value in expected.state_dict().items():
            assert torch.allclose(got[key], value, atol=1e-5), (weights, key)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())


def test_the_micro_compose_suite_is_the_measured_design_c_on_base_seed_0():
    """reports/issue11/ holds design c's scores from scripts/sweep_issue11c.yaml; the embedded suite
    that users run must be that variant exactly (one changed field and its rows would describe
    another world), and so build the same base."""
    from benchmark.keys import base_recipe_hash
    from benchmark.suite import load_suite

    variants = yaml.safe_load((Path(__file__).resolve().parent.parent / "scripts/sweep_issue11c.yaml").read_text())
    micro = load_suite("micro")
    measured = load_script("micro_sweep").variant_suite(micro, variants["c_base0"])
    shipped = load_suite("micro-compose")
    ignored = {"name", "description"}
    assert shipped.model_dump(mode="json", exclude=ignored) == measured.model_dump(mode="json", exclude=ignored)
    assert base_recipe_hash(shipped) == base_recipe_hash(measured)
    assert base_recipe_hash(shipped) != base_recipe_hash(micro)
