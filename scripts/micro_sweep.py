"""Explore micro-suite designs: run the grid for several suite variants and print validity figures.

Research tool for the issue "Make the micro suite a real benchmark". Each variant is the micro
suite with overrides (base size, pretraining, corpus mix, expert recipe); the grid runs through
the real runner into one SQLite file per variant, and `benchmark.validity.assess` reports the bar.
`--fast-eval` swaps lm-eval for a plain batched greedy decoder with the same prompts, stop strings
and scoring rules, and evaluates programs by safe arithmetic instead of the sandbox: for machines
(a borrowed GPU) without lm-eval; never for stored leaderboard results.

Each variant's scores are also written to DIR/VARIANT.scores.json, a record small enough to keep in
git (the databases and the base builds do not outlive the machine); `--report` compares records.

Usage: python scripts/micro_sweep.py VARIANTS.yaml --out DIR [--seeds 1] [--fast-eval] [--only NAME ...]
       python scripts/micro_sweep.py --report DIR/A.scores.json DIR/B.scores.json ...
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import json
import re
import subprocess
import time
from pathlib import Path

import torch
import yaml

from benchmark.base_model import prepare_base
from benchmark.evaluation import TaskOutcome, data_file
from benchmark.experts import prepare_experts, skill_training_data
from benchmark.results import open_readonly
from benchmark.runner import Reporter, run_grid
from benchmark.storage import SampleRecord, ScoreRecord, open_store
from benchmark.suite import Suite, load_suite
from benchmark.taskinfo import TASKS
from benchmark.validity import Bar, agreement_across_bases, assess
from category_breakdown import breakdown  # sibling scripts: scripts/ is on sys.path when one runs
from manual_problem_parts import parts

PROGRAM_STOPS = ["\n\n", "Question:", "Instruction:", "Program:", "Answer:"]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _value(node: ast.AST) -> float:
    """Arithmetic on number literals only; anything else is refused (the program counts as wrong)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ValueError("division by zero")
        return {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right,
                ast.Div: left / right}[type(node.op)]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    raise ValueError("not plain arithmetic")


def run_arithmetic_program(code: str) -> float | None:
    """The last number a `print(<arithmetic>)` program prints, without executing anything."""
    try:
        tree = ast.parse(code)
        printed = None
        for statement in tree.body:
            call = statement.value if isinstance(statement, ast.Expr) else None
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "print" and len(call.args) == 1):
                return None
            printed = _value(call.args[0])
        return printed
    except (SyntaxError, ValueError, RecursionError, OverflowError):
        return None


def cut(text: str, stops: list[str]) -> str:
    positions = [text.find(s) for s in stops if s in text]
    return text[: min(positions)] if positions else text


def fast_evaluate(model, tokenizer, task_names, data_dir, eval_spec) -> dict[str, TaskOutcome]:
    """Greedy batched decoding and the tasks' scoring rules, without lm-eval."""
    tokenizer.padding_side = "left"
    outcomes = {}
    for task in task_names:
        docs = [json.loads(line) for line in data_file(Path(data_dir), task).read_text().splitlines()]
        docs = docs[: eval_spec.limit] if eval_spec.limit else docs
        stops = ["\n"] if task == "math" else PROGRAM_STOPS
        generations = []
        for start in range(0, len(docs), 256):
            batch = tokenizer([d["prompt"] for d in docs[start : start + 256]], return_tensors="pt",
                              padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=eval_spec.max_gen_toks, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            generations += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        samples = []
        for i, (doc, generation) in enumerate(zip(docs, generations)):
            text = cut(generation, stops)
            if task == "math":
                numbers = NUMBER.findall(text)
                value = float(numbers[-1]) if numbers else None
            else:
                value = run_arithmetic_program((doc.get("program_prefix", "") + text).strip())
            correct = value is not None and abs(value - doc["answer"]) <= 1e-3
            extra = {"category": str(doc["category"])} if "category" in doc else {}
            samples.append(SampleRecord(i, doc["prompt"], generation, doc["target"], str(value), correct, extra))
        accuracy = sum(s.correct for s in samples) / len(samples)
        stderr = (accuracy * (1 - accuracy) / max(1, len(samples) - 1)) ** 0.5
        outcomes[task] = TaskOutcome(task, [ScoreRecord(TASKS.get(task).primary_metric, accuracy, stderr,
                                                        len(samples), True)], samples)
    return outcomes


def delta_norm_ratios(suite: Suite) -> dict[str, float]:
    """Per expert, the mean over adapted modules of ||dW||_F / ||W||_F (cached base and experts)."""
    base = prepare_base(suite)
    experts = prepare_experts(suite, base, suite.seeds[0], skill_training_data(suite))
    ratios = {}
    for expert in experts:
        values = [(f.delta().norm() / base.model.get_submodule(m).weight.detach().float().cpu().norm()).item()
                  for m, f in expert.modules.items()]
        ratios[expert.name] = sum(values) / len(values)
    cosines = []
    a, b = experts[0], experts[1]
    for m in set(a.modules) & set(b.modules):
        da, db = a.modules[m].delta().flatten(), b.modules[m].delta().flatten()
        cosines.append((da @ db / (da.norm() * db.norm())).item())
    ratios["cosine(expert0, expert1)"] = sum(cosines) / max(1, len(cosines))
    return ratios


def _printing_progress(label: str):
    start = time.perf_counter()

    def update(step: int, total: int, loss: float) -> None:
        if step == total or step % max(1, total // 10) == 0:
            note = "" if loss != loss else f" loss {loss:.3f}"  # NaN: a bar that counts, not trains
            print(f"  {label}: {step}/{total}{note} ({time.perf_counter() - start:.0f} s)", flush=True)

    return update


def variant_suite(base: Suite, overrides: dict) -> Suite:
    merged = base.model_dump(mode="json")
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return Suite.model_validate(merged)


def primary_scores(db: Path, suite_name: str) -> dict[tuple[str, str, int], float]:
    """{(method, task, seed): primary score} of the ok runs stored for a suite."""
    scores = {}
    reader = open_readonly(f"sqlite:///{db}")
    for row in reader.runs(suite=suite_name, status="ok"):
        for score in row.scores:
            if score.primary:
                scores[(row.method, row.task, row.seed)] = score.value
    reader.close()
    return scores


def score_record(db: Path, suite: Suite, overrides: dict, seconds: float) -> dict:
    """A variant's results as a small JSON record: every primary score per (method, task, seed),
    per-category counts of the composite tasks from the stored samples, and which parts of the
    manual_math_code programs are right (scripts/manual_problem_parts.py).

    A base build is an hour of this machine, and a session can end before the next build runs;
    the databases and caches do not outlive the machine, while these records can be committed.
    `--report` reads several of them and applies the bar across base builds."""
    reader = open_readonly(f"sqlite:///{db}")
    categories = {task: {method: {c: sorted(v) for c, v in per.items()} for method, per in
                         breakdown(reader, suite.name, task).items()}
                  for task in suite.tasks if TASKS.get(task).kind == "composite"}
    program_parts = ({method: {str(seed): shares for seed, shares in per.items()}
                      for method, per in parts(reader, suite.name).items()}
                     if "manual_math_code" in suite.tasks else {})
    reader.close()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    return {"suite": suite.name, "tasks": list(suite.tasks), "overrides": overrides,
            "grid_seconds": round(seconds), "commit": commit,
            "versions": {name: importlib.metadata.version(name)
                         for name in ("torch", "transformers", "peft", "lm_eval")},
            "scores": [{"method": m, "task": t, "seed": s, "value": v}
                       for (m, t, s), v in sorted(primary_scores(db, suite.name).items())],
            "categories": categories, "manual_math_code_parts": program_parts}


def record_scores(record: dict) -> dict[tuple[str, str, int], float]:
    return {(row["method"], row["task"], row["seed"]): row["value"] for row in record["scores"]}


def print_variant(tasks: list[str], scores: dict[tuple[str, str, int], float]) -> bool:
    """The means table and the bar of one build; True when the bar holds on every task."""
    methods = sorted({m for m, _, _ in scores})
    widths = [max(11, len(t) + 2) for t in tasks]
    print(f"{'method':18}" + "".join(f"{t:>{w}}" for t, w in zip(tasks, widths)))
    for method in methods:
        cells = [[v for (m, t, _), v in scores.items() if m == method and t == task] for task in tasks]
        print(f"{method:18}" + "".join(f"{sum(c) / len(c):{w}.3f}" if c else f"{'n/a':>{w}}"
                                       for c, w in zip(cells, widths)))
    tasks = [t for t in tasks if any(task == t for _, task, _ in scores)]  # a partial grid: what it has
    report = assess(scores, [TASKS.get(t) for t in tasks])
    for tv in report:
        print(f"  {tv.task}: {'PASS' if tv.ok else 'fail'} " + "; ".join(
            f"{c.what}={'n/a' if c.value is None else round(c.value, 3)}" for c in tv.checks if not c.ok))
        for figure, value in tv.figures.items():
            if figure.startswith("seed "):
                print(f"      {figure}: {'n/a' if value is None else round(value, 3)}")
    return all(tv.ok for tv in report)


def report_records(paths: list[Path]) -> bool:
    """Each record's table and bar, then the ranking across builds per composite task."""
    records = [json.loads(path.read_text()) for path in paths]
    ok = True
    for record in records:
        print(f"\n=== {record['suite']} (commit {record['commit'][:8]}, grid {record['grid_seconds']} s)")
        ok = print_variant(record["tasks"], record_scores(record)) and ok
    if len(records) > 1:
        by_build = {record["suite"]: record_scores(record) for record in records}
        print("\nKendall tau between base builds (means over expert seeds):")
        for task in [t for t in records[0]["tasks"] if TASKS.get(t).kind == "composite"]:
            tau, pairs = agreement_across_bases(by_build, task)
            ok = ok and tau is not None and tau >= Bar().min_tau
            print(f"  {task}: mean {'n/a' if tau is None else round(tau, 3)}; " +
                  ", ".join(f"{a}/{b} {value:.3f}" for (a, b), value in pairs.items()))
    print("the bar holds on every build" if ok else "the bar does not hold on every build")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", type=Path, nargs="?")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--fast-eval", action="store_true")
    parser.add_argument("--only", nargs="+", metavar="VARIANT",
                        help="run these variants of the file only (one base build per session fits)")
    parser.add_argument("--methods", default="base,expert-math,expert-code,task_arithmetic,ties,dare_ties,cat,data_mix")
    parser.add_argument("--tasks", help="comma-separated tasks to run first or alone (default: the suite's)")
    parser.add_argument("--report", nargs="+", type=Path, metavar="RECORD",
                        help="print the bar of these score records (VARIANT.scores.json) and compare them")
    options = parser.parse_args()
    if options.report:
        raise SystemExit(0 if report_records(options.report) else 1)
    if options.variants is None or options.out is None:
        parser.error("VARIANTS.yaml and --out are needed to run a sweep (or --report RECORD ...)")
    options.out.mkdir(parents=True, exist_ok=True)
    micro = load_suite("micro")
    variants = yaml.safe_load(options.variants.read_text())
    unknown = sorted(set(options.only or []) - set(variants))
    if unknown:
        parser.error(f"no variant {', '.join(unknown)} in {options.variants} (it has {', '.join(variants)})")
    for name, overrides in variants.items():
        if options.only and name not in options.only:
            continue
        suite = variant_suite(micro, overrides or {})
        db = options.out / f"{name}.db"
        store = open_store(f"sqlite:///{db}")
        start = time.perf_counter()
        kwargs = {"evaluator": fast_evaluate} if options.fast_eval else {}
        reporter = Reporter(progress=_printing_progress, log=lambda message: print(message, flush=True))
        run_grid(suite, store, methods=options.methods.split(","), seeds=list(suite.seeds[: options.seeds]),
                 tasks=options.tasks.split(",") if options.tasks else None, reporter=reporter, **kwargs)
        store.close()
        seconds = time.perf_counter() - start
        record = score_record(db, suite, overrides or {}, seconds)
        (options.out / f"{name}.scores.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"\n=== {name} ({seconds:.0f} s) {json.dumps(overrides)}")
        print_variant(list(suite.tasks), record_scores(record))
        print("  delta norm ratios:", {k: round(v, 4) for k, v in delta_norm_ratios(suite).items()})


if __name__ == "__main__":
    main()
