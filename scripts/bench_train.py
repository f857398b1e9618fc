"""Tokens per second of one pretraining step of the micro base, float32 against bfloat16 autocast.

Why the micro suite pretrains in bfloat16 mixed precision: on a CPU with AVX512-BF16 it trains
~1.6x the tokens per second of float32 for the same recipe (the base build is the one long step of
a first run). Measures the real training loop (`benchmark.training.train_loop`) on random tokens.
Usage: python scripts/bench_train.py [--steps 6] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmark.micro.model import llama_config
from benchmark.suite import load_suite
from benchmark.training import train_loop
from transformers import LlamaForCausalLM


def tokens_per_second(precision: str, steps: int) -> float:
    spec = load_suite("micro").base.model_copy(update={"precision": precision})
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(spec, spec.vocab_size, 0, 1))
    window = torch.randint(2, spec.vocab_size, (spec.batch_size, spec.seq_len))
    batches = iter(lambda: {"input_ids": window, "labels": window}, None)
    times: list[float] = []
    last = [time.perf_counter()]

    def clock(step: int, total: int, loss: float) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    train_loop(model, list(model.parameters()), batches, steps, spec.lr, precision=precision, progress=clock)
    steady = sorted(times[2:])[len(times[2:]) // 2]  # median after two warm-up steps
    return spec.batch_size * spec.seq_len / steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    print(f"micro base, batch x seq = one step; torch threads {torch.get_num_threads()}")
    results = {p: tokens_per_second(p, options.steps) for p in ("float32", "bfloat16")}
    for precision, rate in results.items():
        print(f"{precision:9s} {rate:8.0f} tokens/s")
    print(f"bfloat16 / float32: {results['bfloat16'] / results['float32']:.2f}x")


if __name__ == "__main__":
    main()
