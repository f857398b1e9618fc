"""Documents of `gsm_hard` from the real data set: `reasoning-machines/gsm-hard`, split train.

Each row holds `input` (the problem), `code` (a PAL program `def solution(): ... return result`)
and `target` (its value, a float). The prompt follows the layout of LoRA Soups' evaluation
(`generate_math_prompt` in its evaluate.py): a header, Instruction / Response demonstrations whose
responses are a fenced `solution()` function, a request for such a function, then the problem.
Its wording and its four demonstrations are SoupBench's own (the reference shows eight).
The document's target is the data set's own program in the same response format.
"""

from __future__ import annotations

from benchmark.data_sources import HubData, read_rows, sample_rows

HUB = HubData("reasoning-machines/gsm-hard", "train", ("input", "code", "target"))

HEADER = "Let's use Python to solve math problems step by step. Below are a few Instruction-Response pairs on how to do it."
REQUEST = ("Now write a Python function 'solution' that solves this Instruction, in one block enclosed in ```. "
           "Write only the code block, with plain numbers: no units and no symbols that are not valid Python.")
LEAD = "Let's solve it with Python:\n```\n"

DEMOS = (
    ("A baker makes 3125 rolls a day and sells them in bags of 5. How many bags does she fill in 4 days?",
     "def solution():\n    rolls_per_day = 3125\n    days = 4\n    rolls_per_bag = 5\n"
     "    result = rolls_per_day * days / rolls_per_bag\n    return result"),
    ("Tom had 7412 stamps. He gave 1288 to his sister and bought 350 more. How many stamps does he have now?",
     "def solution():\n    stamps = 7412\n    stamps -= 1288\n    stamps += 350\n    result = stamps\n    return result"),
    ("A train ticket costs $42 and a bus ticket costs $7. A class of 236 pupils takes the train there and the bus "
     "back. How much do the tickets cost in all?",
     "def solution():\n    pupils = 236\n    train_ticket = 42\n    bus_ticket = 7\n"
     "    result = pupils * (train_ticket + bus_ticket)\n    return result"),
    ("A farm has 96000 apples. A third of them are sold at the market and half of the rest are made into juice. "
     "How many apples are left?",
     "def solution():\n    apples = 96000\n    sold = apples / 3\n    juiced = (apples - sold) / 2\n"
     "    result = apples - sold - juiced\n    return result"),
)


def response(code: str) -> str:
    return f"{LEAD}{code.strip()}\n```"


def prompt(problem: str) -> str:
    shots = "".join(f"### Instruction:\n{q}\n\n### Response:\n{response(code)}\n\n" for q, code in DEMOS)
    return f"{HEADER}\n\n{shots}{REQUEST}\n\n### Instruction:\n{problem.strip()}\n\n### Response:\n"


def build_eval(n: int, seed: int, data_path: str = HUB.repo_id) -> list[dict]:
    """`n` of the data set's problems (all 1,319, in its order, when `n` covers them); `data_path` is
    a local copy (.jsonl, .json or .parquet) or the hub id."""
    rows = read_rows(data_path, HUB, "task gsm_hard's documents")
    return [{"prompt": prompt(row["input"]), "target": response(row["code"]), "answer": float(row["target"]),
             "question": row["input"]}
            for row in sample_rows(rows, n, seed)]
