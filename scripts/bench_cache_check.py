"""What the cache's seal costs beside loading: a micro-sized base and expert, sealed, checked and loaded.

    python scripts/bench_cache_check.py             # micro's sizes (base ~17 MB, expert ~0.75 MB)
    python scripts/bench_cache_check.py --repeat 20

Builds a base of the micro suite's architecture (random weights: only the bytes matter here) and a
LoRA of micro's expert recipe, in a temporary folder; then times, median of `--repeat` tries:
sealing an entry (`cache.mark_complete`), checking it (`cache.problem`, what every load now does
first), the base's fingerprint (computed on every load before seals recorded it) and the load
itself (`from_pretrained` and the tokenizer for the base, `load_expert` for an expert). Nothing of
the user's cache is read.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def build(root: Path) -> tuple[Path, Path]:
    """A micro-sized base folder (config, weights, tokenizer) and an expert folder, both sealed."""
    import torch
    from peft import get_peft_model
    from transformers import LlamaForCausalLM

    from benchmark import cache
    from benchmark.micro.model import llama_config
    from benchmark.micro.tokenizer import train_tokenizer
    from benchmark.suite import load_suite
    from benchmark.training import lora_config

    suite = load_suite("micro")
    tokenizer = train_tokenizer(["Twelve apples cost 3 dollars each; print(12 * 3)"] * 50, suite.base.vocab_size)
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(suite.base, suite.base.vocab_size, tokenizer.eos_token_id,
                                          tokenizer.pad_token_id))
    base, expert = root / "base", root / "expert"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    cache.mark_complete(base)
    peft_model = get_peft_model(model, lora_config(suite.expert))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)  # PEFT's zero init would be all zeros on disk
    peft_model.save_pretrained(expert, save_embedding_layers=False)
    cache.mark_complete(expert)
    return base, expert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from benchmark import cache
    from benchmark.adapters import load_expert
    from benchmark.base_model import _load, weights_fingerprint

    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="soupbench-bench-cache-") as scratch:
        base, expert = build(Path(scratch))
        sizes = {name: sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
                 for name, folder in (("base", base), ("expert", expert))}
        rows = {
            ("base", "seal (mark_complete, once per build)"): median_ms(lambda: cache.mark_complete(base), args.repeat),
            ("base", "check (cache.problem)"): median_ms(lambda: cache.problem(base), args.repeat),
            ("base", "fingerprint (weights_fingerprint)"): median_ms(lambda: weights_fingerprint(base), args.repeat),
            ("base", "load (from_pretrained + tokenizer)"): median_ms(
                lambda: _load(base, torch.float32, "cpu", fingerprint="known"), args.repeat),
            ("expert", "seal (mark_complete, once per build)"): median_ms(lambda: cache.mark_complete(expert),
                                                                          args.repeat),
            ("expert", "check (cache.problem)"): median_ms(lambda: cache.problem(expert), args.repeat),
            ("expert", "load (load_expert)"): median_ms(lambda: load_expert(expert), args.repeat),
        }
    print(f"base {sizes['base']:.1f} MiB, expert {sizes['expert']:.2f} MiB; median of {args.repeat} "
          f"(torch threads: {torch.get_num_threads()})")
    for (entry, what), ms in rows.items():
        print(f"  {entry:<7} {what:<40} {ms:8.1f} ms")
    check, load = rows[("base", "check (cache.problem)")], rows[("base", "load (from_pretrained + tokenizer)")]
    fingerprint = rows[("base", "fingerprint (weights_fingerprint)")]
    # A cached base was loaded as fingerprint + load; it is now check + load (the seal records the
    # fingerprint, which the check vouches for).
    print(f"  base from the cache: {fingerprint + load:.1f} ms before (fingerprint + load), "
          f"{check + load:.1f} ms now (check + load)")
    expert_check, expert_load = rows[("expert", "check (cache.problem)")], rows[("expert", "load (load_expert)")]
    print(f"  expert from the cache: the check adds {expert_check:.1f} ms to a {expert_load:.1f} ms load "
          f"({expert_check / expert_load:.0%})")


if __name__ == "__main__":
    main()
