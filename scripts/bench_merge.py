"""Merge time and memory on a >=100M-parameter model: SoupBench's methods vs PEFT's add_weighted_adapter.

The model is a Llama built from a config with random weights (hidden 768, 12 layers, intermediate
2048, vocab 32000: 134M parameters); the experts are random rank-16 LoRAs on every linear module of
the decoder (random B, so every dW_i is non-zero), saved as PEFT folders so that both sides load
the same files. Each row times one merge from the same starting point, the loaded base:

- SoupBench: `load_expert` per adapter, a fresh copy of the base, `method.merge`, the runner's
  contract check and `apply_deltas` (what `soupbench run` and `soupbench merge` do).
- PEFT: a fresh copy, `PeftModel.from_pretrained` + `load_adapter` per adapter,
  `add_weighted_adapter(combination_type=...)` and `merge_and_unload`.

"merge s" is the combination and the write into the weights alone; "total s" adds loading the
adapters and copying the base. Memory is the sampled process RSS (`benchmark.memory.PeakMemory`):
its peak, and the peak minus the RSS just before the row (the base already loaded), which is what
the merge itself costs, the fresh copy of the base included (~0.5 GB on both sides).

Which PEFT types compute the same thing: `cat` is exactly task arithmetic / static CAT (a
concatenated LoRA); `svd` is SoupBench's `svd`; `*_svd` apply the dense method to each dW_i and
then truncate to rank max(r_i) by SVD; `linear`, `ties`, `dare_*` and `magnitude_prune` act on A
and B separately (B_i A_j cross terms, not the papers' definitions). The "rel diff" column is
||dW_soup - dW_peft|| / ||dW_soup|| over two sampled modules (DARE draws differ by construction).

Usage: python scripts/bench_merge.py [--quick] [--experts 3] [--rank 16] [--threads 1]
(one thread by default: on a small machine shared with other work, torch's second thread mostly
waits for the first; both sides get the same setting).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import psutil
import torch
from peft import LoraConfig, PeftModel
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from benchmark.adapters import load_expert
from benchmark.apply import apply_deltas
from benchmark.catalog import create_method
from benchmark.contract import check_merge_result
from benchmark.memory import PeakMemory
from benchmark.method import MergeContext

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# SoupBench method -> the PEFT combination types it is compared with.
PAIRS = {
    "task_arithmetic": ["cat", "linear"],
    "ties": ["ties_svd", "ties"],
    "dare_linear": ["dare_linear_svd", "dare_linear"],
    "dare_ties": ["dare_ties_svd", "dare_ties"],
    "magnitude_prune": ["magnitude_prune_svd", "magnitude_prune"],
    "svd": ["svd"],
    "cat_static": ["cat"],
}
SAME_MATH = {("task_arithmetic", "cat"), ("cat_static", "cat"), ("svd", "svd")}
DENSITY = 0.75


def build_base(layers: int) -> LlamaForCausalLM:
    config = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=layers, num_attention_heads=12,
                         num_key_value_heads=12, vocab_size=32000, max_position_embeddings=512)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def write_expert(model: torch.nn.Module, folder: Path, rank: int, seed: int) -> None:
    """A PEFT LoRA folder with random A and B on every decoder linear module."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in TARGETS:
            out, inp = module.weight.shape
            tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(rank, inp, generator=generator) / inp**0.5
            tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(out, rank, generator=generator) * 0.01
    LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS).save_pretrained(str(folder))
    save_file(tensors, str(folder / "adapter_model.safetensors"))


def settle() -> float:
    """Free what the last row left and return the RSS (MiB) the next row starts from."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back so RSS is comparable
    except OSError:
        pass
    return psutil.Process().memory_info().rss / 2**20


def measure(run: Callable[[], tuple[float, torch.nn.Module]], sample: list[str]) -> dict:
    """Run one merge; return its times, memory and the sampled modules' merged weights."""
    start_rss = settle()
    with PeakMemory() as memory:
        start = time.perf_counter()
        merge_seconds, model = run()
        total = time.perf_counter() - start
    weights = {m: model.get_submodule(m).weight.detach().clone() for m in sample}
    del model
    return {"merge": merge_seconds, "total": total, "peak": memory.peak_mb, "delta": memory.peak_mb - start_rss,
            "weights": weights}


def soupbench_row(base: torch.nn.Module, paths: list[Path], method: str) -> Callable[[], tuple[float, torch.nn.Module]]:
    def run() -> tuple[float, torch.nn.Module]:
        experts = [load_expert(p) for p in paths]
        model = copy.deepcopy(base)
        instance = create_method(method, {})
        start = time.perf_counter()
        result = check_merge_result(instance, instance.merge(experts, MergeContext(seed=0)), model)
        apply_deltas(model, result)
        return time.perf_counter() - start, model
    return run


def peft_row(base: torch.nn.Module, paths: list[Path], kind: str) -> Callable[[], tuple[float, torch.nn.Module]]:
    def run() -> tuple[float, torch.nn.Module]:
        model = PeftModel.from_pretrained(copy.deepcopy(base), str(paths[0]), adapter_name="e0")
        for i, path in enumerate(paths[1:], start=1):
            model.load_adapter(str(path), adapter_name=f"e{i}")
        names = [f"e{i}" for i in range(len(paths))]
        torch.manual_seed(0)
        start = time.perf_counter()
        density = None if kind in ("cat", "linear", "svd") else DENSITY
        model.add_weighted_adapter(names, [1.0] * len(names), "merged", combination_type=kind, density=density)
        merged = model.merge_and_unload(adapter_names=["merged"])
        return time.perf_counter() - start, merged
    return run


def rel_diff(soup: dict, peft: dict, base: torch.nn.Module) -> float:
    num = den = 0.0
    for module, weight in soup["weights"].items():
        original = base.get_submodule(module).weight.detach()
        num += float(((weight - original) - (peft["weights"][module] - original)).norm() ** 2)
        den += float((weight - original).norm() ** 2)
    return (num / den) ** 0.5 if den else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 layers (66M parameters) instead of 12")
    parser.add_argument("--experts", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecation chatter

    base = build_base(4 if options.quick else 12)
    n_params = sum(p.numel() for p in base.parameters())
    layers = base.config.num_hidden_layers
    sample = ["model.layers.0.self_attn.q_proj", f"model.layers.{layers - 1}.mlp.down_proj"]
    work = Path(tempfile.mkdtemp(prefix="soupbench-bench-merge-"))
    paths = []
    for i in range(options.experts):
        paths.append(work / f"expert{i}")
        write_expert(base, paths[-1], options.rank, seed=i + 1)
    print(f"base: Llama, {n_params / 1e6:.1f}M parameters, {layers} layers; {options.experts} experts, rank "
          f"{options.rank}, {len(TARGETS) * layers} modules each; torch threads {options.threads}; "
          f"RSS with the base loaded: {settle():.0f} MiB", flush=True)

    header = (f"{'soupbench':<16} {'merge s':>8} {'total s':>8} {'peak MiB':>9} {'+MiB':>6} | {'peft type':<20} "
              f"{'merge s':>8} {'total s':>8} {'peak MiB':>9} {'+MiB':>6} | {'t peft/soup':>11} {'+MiB p/s':>9} "
              f"{'rel diff':>9}")
    lines = [header, "-" * len(header)]
    print(header, flush=True)
    for method in options.methods:
        soup = measure(soupbench_row(base, paths, method), sample)
        for kind in PAIRS[method]:
            peft = measure(peft_row(base, paths, kind), sample)
            same = "=" if (method, kind) in SAME_MATH else ""
            line = (f"{method:<16} {soup['merge']:>8.2f} {soup['total']:>8.2f} {soup['peak']:>9.0f} "
                    f"{soup['delta']:>6.0f} | {kind + same:<20} {peft['merge']:>8.2f} {peft['total']:>8.2f} "
                    f"{peft['peak']:>9.0f} {peft['delta']:>6.0f} | {peft['merge'] / soup['merge']:>11.2f} "
                    f"{peft['delta'] / max(soup['delta'], 1.0):>9.2f} {rel_diff(soup, peft, base):>9.1e}")
            lines.append(line)
            print(line, flush=True)
    print("\n'=' marks the PEFT type that computes the same merge; t peft/soup is the ratio of merge seconds, "
          "+MiB p/s that of the memory above the loaded base.")


if __name__ == "__main__":
    main()
