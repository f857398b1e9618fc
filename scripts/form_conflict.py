"""Where a math + code weight merge leaves the program form: next-token odds at the two forks.

    SOUPBENCH_CACHE=... python scripts/form_conflict.py scripts/sweep_issue11c.yaml c_base0 c_base1 [--seed 0]

The math skill answers "22 + 52 = 74. The answer is 74." and the code skill "print(22 + 52)": the
two forms share the expression and part right after it, where the program closes with ")" and the
worked answer goes on with " =". On a base where the math expert's " =" wins there even inside
"print(", every weight merge writes "print(22 + 52 = 25. The answer is 25." and scores 0 on
`math_code` (issue 11, base seed 1), while the same merges keep the program on another build.
This measures, on `math_code`'s own eval stories, with the story's reference program teacher-forced:
- `first print`: p("print") as the first token of the answer (the merge opens the program);
- `close`, `equals`: p(")") and p(" =") right after "print(<expression>" (the fork);
- `op right`: after "print(<first operand>", whether the story's operation is the likeliest of the
  four (the part the math skill brings);
for the base, each expert alone, and task arithmetic with the weights of `--weights` (the harness's
own TaskArithmetic and apply_deltas, on the cached base and experts of the variant). Per module
kind and layer, the two deltas' norms and cosine come from scripts/expert_geometry.py.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.apply import apply_deltas  # noqa: E402
from benchmark.method import MergeContext  # noqa: E402
from methods.task_arithmetic import TaskArithmetic  # noqa: E402

PROGRAM = re.compile(r"print\((\d+) ([-+*/]) (\d+)\)")
OPERATORS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def single_token(tokenizer, text: str) -> int:
    """The id of `text`, which must be one token: a next-token probability of a piece would not be
    the probability of the text."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens for this tokenizer, not one")
    return ids[0]


def fork_probabilities(model: torch.nn.Module, tokenizer, docs: list[dict]) -> dict[str, float]:
    """Means over `docs` (math_code eval documents) of the four figures in the module docstring."""
    token = {name: single_token(tokenizer, text) for name, text in {"print": "print", "close": ")", "equals": " ="}.items()}
    operator = {op: single_token(tokenizer, " " + sign) for op, sign in OPERATORS.items()}

    def next_token(text: str) -> torch.Tensor:
        ids = tokenizer.encode(text, add_special_tokens=False)
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0, -1].float().softmax(-1)

    sums: dict[str, float] = defaultdict(float)
    for doc in docs:
        first, sign, second = PROGRAM.fullmatch(doc["target"]).groups()
        sums["first print"] += next_token(doc["prompt"])[token["print"]].item()
        fork = next_token(doc["prompt"] + f"print({first} {sign} {second}")
        sums["close"] += fork[token["close"]].item()
        sums["equals"] += fork[token["equals"]].item()
        after_operand = next_token(doc["prompt"] + f"print({first}")
        likeliest = max(operator, key=lambda op: after_operand[operator[op]].item())
        sums["op right"] += float(likeliest == doc["category"])
    return {name: value / len(docs) for name, value in sums.items()}


def merged_model(base: torch.nn.Module, experts: list, weights: list[float]) -> torch.nn.Module:
    """A copy of `base` with task arithmetic of `experts` applied (weights 0 leave an expert out)."""
    model = copy.deepcopy(base)
    kept = [(e, w) for e, w in zip(experts, weights) if w]
    if kept:
        method = TaskArithmetic(TaskArithmetic.Params(weights=[w for _, w in kept]))
        apply_deltas(model, method.merge([e for e, _ in kept], MergeContext(seed=0)))
    return model.eval()


def layer_norms(geometry: dict[str, dict[str, float]], names: list[str]) -> dict[int, dict[str, float]]:
    """Per transformer layer, each expert's delta norm over the layer's modules."""
    squares: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for module, figures in geometry.items():
        found = re.search(r"\.(\d+)\.", module)
        if module.startswith("[") or not found:
            continue
        for name in names:
            squares[int(found.group(1))][name] += figures[f"norm {name}"] ** 2
    return {layer: {n: v ** 0.5 for n, v in by_name.items()} for layer, by_name in sorted(squares.items())}


def main() -> None:
    from benchmark.base_model import prepare_base
    from benchmark.experts import prepare_experts, skill_training_data
    from benchmark.suite import load_suite
    from expert_geometry import geometry
    from micro_sweep import variant_suite
    from tasks.math_code.data import build_eval

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", type=Path)
    parser.add_argument("names", nargs="+")
    parser.add_argument("--seed", type=int, default=0, help="expert seed")
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--weights", default="1:1,0.5:1,1:0.5,0.5:0.5", help="math:code pairs for task arithmetic")
    options = parser.parse_args()
    variants = yaml.safe_load(options.variants.read_text())
    docs = build_eval(options.docs, 0)
    pairs = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)] + [tuple(map(float, p.split(":"))) for p in options.weights.split(",")]
    for name in options.names:
        suite = variant_suite(load_suite("micro"), variants[name])
        base = prepare_base(suite)
        experts = {e.name: e for e in prepare_experts(suite, base, options.seed, skill_training_data(suite))}
        pair = [experts["math"], experts["code"]]
        shapes = geometry(pair)
        print(f"== {name} (expert seed {options.seed})")
        for kind, figures in shapes.items():
            if kind.startswith("["):
                print(f"  {kind:11} norm math {figures['norm math']:6.2f}  norm code {figures['norm code']:6.2f}"
                      f"  cos {figures['cos math/code']:+.3f}")
        for layer, norms in layer_norms(shapes, ["math", "code"]).items():
            print(f"  layer {layer}: norm math {norms['math']:.2f}  norm code {norms['code']:.2f}")
        for w_math, w_code in pairs:
            label = {(0.0, 0.0): "base", (1.0, 0.0): "math alone", (0.0, 1.0): "code alone"}.get(
                (w_math, w_code), f"TA {w_math:g} math + {w_code:g} code")
            figures = fork_probabilities(merged_model(base.model, pair, [w_math, w_code]), base.tokenizer, docs)
            print(f"  {label:24} " + "  ".join(f"{k} {v:.3f}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
