"""Probe a micro base's latent abilities, the pieces `math_code` needs, before any expert exists.

Greedy completions on held-out situations, in the corpus's own forms (never a task format):
- restate: a story, then "That is" -> " a minus b." (reads the operands and the operation);
- program: "# a minus b" -> "print(a - b)" (writes the program of a computation in words);
- copy: "The numbers are a, b. Again:" -> " a, b." (copies numbers).
A base that fails these cannot compose the skills whatever the merge; one that passes them all
and still does not compose points at the skills' data or the experts instead.
Usage: python scripts/probe_base.py BASE_FOLDER [--n 200] [--digits 1,1 2,2 3,4]
"""

from __future__ import annotations

import argparse
import random

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmark.micro import world
from benchmark.micro.corpus import PHRASE


def complete(model, tokenizer, prompts: list[str], max_new_tokens: int = 24) -> list[str]:
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def probe(model, tokenizer, digits: tuple[int, int], n: int, seed: int = 123) -> dict[str, float]:
    rng = random.Random(seed)
    situations = [world.draw_situation(rng, digits) for _ in range(n)]
    phrases = [PHRASE[s.op].format(a=s.a, b=s.b) for s in situations]
    told = [world.story(s).rsplit(". ", 1)[0] + "." for s in situations]
    checks = {
        "restate": ([t + " That is" for t in told], [f" {p}." for p in phrases]),
        "program": ([f"# {p}\n" for p in phrases], [world.program(s) for s in situations]),
        "copy": ([f"The numbers are {s.a}, {s.b}. Again:" for s in situations], [f" {s.a}, {s.b}." for s in situations]),
    }
    return {name: sum(o.startswith(w) for o, w in zip(complete(model, tokenizer, prompts), wanted)) / n
            for name, (prompts, wanted) in checks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="a micro base folder (SOUPBENCH_CACHE/base/<key>)")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--digits", nargs="+", default=["1,1", "2,2", "3,4"])
    options = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained(options.base).eval()
    tokenizer = AutoTokenizer.from_pretrained(options.base)
    for spec in options.digits:
        low, high = (int(x) for x in spec.split(","))
        figures = probe(model, tokenizer, (low, high), options.n)
        print(f"digits {low}-{high}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
