"""Where `manual_math_code` programs go wrong, from the stored samples: per method and seed, the
share of programs that get each of the task's three parts right.

    python scripts/manual_problem_parts.py DB_OR_URL --suite micro-c-base0

A program is right only if the story's operation (math), the story's own number (copying), the
manual's fact (manual) and the program form (code) all are. Exact match says none of which one is
missing; these shares do: `op` (the expression's operator), `n` (the story's number is an operand),
`fact` (the manual's number is the other), `stated` (the program has a comment with a number, not a commented-out print),
`stated_right` (the first number of that comment is the fact) and `right` (exact match). Issue 11's
second design read here that programs copied the story's number and its operation but recalled the
fact no more often than guessing; the third states the fact first.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EXPRESSION = re.compile(r"print\(\s*(-?\d+)\s*([-+*/])\s*(-?\d+)\s*\)")
NUMBER = re.compile(r"\d+")
PARTS = ("op", "n", "fact", "stated", "stated_right", "right")


def program_parts(prompt: str, generation: str, target: str, correct: bool | None) -> dict[str, bool]:
    """Which parts one program has right. The reference (`target`) holds the fact in its comment and
    the expression in its `print`; a prompt that ends with the comment sign opened the program."""
    opening = "#" if prompt.endswith("#") else ""
    reference, program = opening + target, opening + generation
    (left, op, right), = EXPRESSION.findall(reference)
    fact = int(NUMBER.findall(reference.splitlines()[0])[0])
    n = int(right) if op == "-" else int(left)  # a subtraction takes the fact first (manual.Problem)
    lines = program.splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    found = EXPRESSION.search(code)  # a print under the comment sign is no program
    operands = [int(found.group(1)), int(found.group(3))] if found else []
    comment = next((line for line in lines if line.lstrip().startswith("#") and not EXPRESSION.search(line)
                    and NUMBER.search(line)), None)
    said = NUMBER.findall(comment) if comment else []
    return {"op": bool(found) and found.group(2) == op, "n": n in operands, "fact": fact in operands,
            "stated": comment is not None, "stated_right": bool(said) and int(said[0]) == fact,
            "right": bool(correct)}


def parts(reader, suite: str, task: str = "manual_math_code") -> dict[str, dict[int, dict[str, float]]]:
    """{method: {seed: {part: share of the run's programs}}} over the ok runs of `task`."""
    table: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for run in reader.runs(suite=suite, status="ok"):
        if run.task != task:
            continue
        samples = reader.samples(run.id)
        if not samples:
            continue
        counts = [program_parts(s.prompt, s.generation, s.target, s.correct) for s in samples]
        table[run.method][run.seed] = {p: sum(c[p] for c in counts) / len(counts) for p in PARTS}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db")
    parser.add_argument("--suite", required=True)
    parser.add_argument("--task", default="manual_math_code")
    args = parser.parse_args()
    from benchmark.results import open_readonly
    from benchmark.storage import resolve_db_url

    reader = open_readonly(resolve_db_url(args.db))
    table = parts(reader, args.suite, args.task)
    reader.close()
    if not table:
        raise SystemExit(f"no stored samples for {args.suite}/{args.task}")
    print(f"{args.suite} / {args.task}: share of programs with each part right, per seed")
    print(f"{'method':<18}{'seed':>5}" + "".join(f"{p:>14}" for p in PARTS))
    for method in sorted(table):
        for seed, shares in sorted(table[method].items()):
            print(f"{method:<18}{seed:>5}" + "".join(f"{shares[p]:>14.2f}" for p in PARTS))


if __name__ == "__main__":
    main()
