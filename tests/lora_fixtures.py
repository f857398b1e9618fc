"""Tiny models and random LoRA experts shared by the merge-method tests.

Two ways to get an expert: straight from random `LoraFactors` (bare-tensor tests, no model), or
as a PEFT adapter with random factors saved to disk and read back with `load_expert` (end-to-end
tests), together with PEFT's own dense delta per module as an independent reference.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

from benchmark.adapters import load_expert
from benchmark.lora import Expert, LoraFactors, lora_scale


def tiny_llama(vocab_size: int = 100, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=vocab_size)
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=100)
    return GPT2LMHeadModel(config).eval()


def random_factors(shape: tuple[int, int], rank: int, scale: float, generator: torch.Generator,
                   std: float = 0.5) -> LoraFactors:
    """LoRA factors with random A and (unlike PEFT's zero init) random B."""
    out, inp = shape
    return LoraFactors(A=torch.randn(rank, inp, generator=generator) * std,
                       B=torch.randn(out, rank, generator=generator) * std, scale=scale)


def bare_experts(seed: int = 0) -> list[Expert]:
    """Two experts that differ in rank, scaling (rsLoRA) and targets.

    `a` (rank 4, alpha 8) adapts q and v; `b` (rank 2, alpha 4, rsLoRA) adapts q and o. So q is
    shared, v is `a`'s alone and o is `b`'s alone.
    """
    generator = torch.Generator().manual_seed(seed)
    shapes = {"layer.q": (24, 16), "layer.v": (12, 16), "layer.o": (16, 24)}
    a_scale, b_scale = lora_scale(8, 4), lora_scale(4, 2, use_rslora=True)
    a = Expert("a", {m: random_factors(shapes[m], 4, a_scale, generator) for m in ("layer.q", "layer.v")})
    b = Expert("b", {m: random_factors(shapes[m], 2, b_scale, generator) for m in ("layer.q", "layer.o")})
    return [a, b]


def stacked_deltas(experts: list[Expert], module: str) -> list[torch.Tensor]:
    """Each expert's dense delta at `module`, zeros for an expert that does not adapt it."""
    shape = next(e.modules[module].shape for e in experts if module in e.modules)
    return [e.modules[module].delta() if module in e.modules else torch.zeros(shape) for e in experts]


def save_random_peft_expert(base: torch.nn.Module, config: LoraConfig, folder: Path, seed: int
                            ) -> tuple[Expert, dict[str, torch.Tensor]]:
    """Save a PEFT adapter with random factors; return it as an Expert and PEFT's dense deltas.

    The reference deltas come from PEFT's own `merge_and_unload`, in the (out, in) layout (GPT-2's
    Conv1D weights are transposed back).
    """
    model = get_peft_model(copy.deepcopy(base), copy.deepcopy(config))  # mutates its argument
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    model.save_pretrained(folder)
    expert = load_expert(folder, name=folder.name, base_model=base)
    merged = model.merge_and_unload()
    dense = {}
    for module in expert.modules:
        diff = merged.get_submodule(module).weight.detach() - base.get_submodule(module).weight.detach()
        dense[module] = diff.T if isinstance(base.get_submodule(module), Conv1D) else diff
    return expert, dense


def add_dense(model: torch.nn.Module, deltas: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A copy of `model` with (out, in) deltas added to its weights: an independent apply."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for module, delta in deltas.items():
            layer = model.get_submodule(module)
            layer.weight += delta.T if isinstance(layer, Conv1D) else delta
    return model


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: models this small only lose to thread hand-offs, badly so on a
    machine busy with other work (tens of times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
