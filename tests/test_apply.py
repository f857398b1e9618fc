"""apply_deltas: in-place addition, Conv1D orientation, dtype, laziness, stats and errors."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from benchmark.adapters import AdapterMismatchError
from benchmark.apply import apply_deltas
from benchmark.lora import LoraFactors
from benchmark.method import MergeResult

Q = "model.layers.0.self_attn.q_proj"
V = "model.layers.1.self_attn.v_proj"


def llama(dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100)
    return LlamaForCausalLM(config).to(dtype).eval()


def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=16, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def factors(out: int, inp: int, rank: int, scale: float = 0.5, seed: int = 0) -> LoraFactors:
    generator = torch.Generator().manual_seed(seed)
    return LoraFactors(torch.randn(rank, inp, generator=generator), torch.randn(out, rank, generator=generator), scale)


def test_dense_and_lowrank_deltas_are_added_in_place():
    model = llama()
    before = {m: model.get_submodule(m).weight.detach().clone() for m in (Q, V)}
    dense = torch.randn(32, 32)
    low = factors(16, 32, rank=3)
    stats = apply_deltas(model, MergeResult(deltas={Q: dense, V: low}))
    torch.testing.assert_close(model.get_submodule(Q).weight, before[Q] + dense, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.get_submodule(V).weight, before[V] + low.delta(), atol=1e-6, rtol=0)
    assert stats["modules"] == 2 and stats["dense_modules"] == 1 and stats["lowrank_modules"] == 1
    assert stats["max_output_rank"] is None  # a dense delta's rank is unknown unless measured


def test_rank_stats():
    assert apply_deltas(llama(), {Q: factors(32, 32, 2), V: factors(16, 32, 5)})["max_output_rank"] == 5
    rank3 = factors(32, 32, 3).delta()
    assert apply_deltas(llama(), {Q: rank3}, measure_rank=True)["max_output_rank"] == 3
    assert apply_deltas(llama(), {})["modules"] == 0


def test_lazy_iterator_is_consumed_once_module_by_module():
    model = llama()
    seen = []

    def lazy():
        for module, shape in ((Q, (32, 32)), (V, (16, 32))):
            seen.append(module)
            yield module, torch.ones(shape)

    before = model.get_submodule(V).weight.detach().clone()
    apply_deltas(model, MergeResult(deltas=lazy()))
    assert seen == [Q, V]
    torch.testing.assert_close(model.get_submodule(V).weight, before + 1)


def test_conv1d_delta_acts_like_a_linear_delta():
    """A (out, in) delta must change the Conv1D's output by x @ delta.T, as it would a Linear."""
    model = gpt2()
    module = "transformer.h.0.attn.c_attn"
    layer = model.get_submodule(module)
    x = torch.randn(3, 32)
    with torch.no_grad():
        before = layer(x)
    low = factors(96, 32, rank=2)
    apply_deltas(model, {module: low})
    with torch.no_grad():
        torch.testing.assert_close(layer(x) - before, x @ low.delta().T, atol=1e-5, rtol=0)


def test_half_precision_weight_keeps_its_dtype_and_rounds_once():
    model = llama(torch.bfloat16)
    before = model.get_submodule(Q).weight.detach().clone()
    delta = torch.randn(32, 32) * 1e-2
    apply_deltas(model, {Q: delta})
    weight = model.get_submodule(Q).weight
    assert weight.dtype == torch.bfloat16
    assert torch.equal(weight, (before.float() + delta).to(torch.bfloat16))


def test_model_output_changes_like_direct_addition():
    model, reference = llama(), llama()
    delta = factors(32, 32, rank=4, scale=0.1)
    apply_deltas(model, {Q: delta})
    with torch.no_grad():
        reference.get_submodule(Q).weight += delta.delta()
        tokens = torch.tensor([[3, 1, 4, 1, 5]])
        torch.testing.assert_close(model(tokens).logits, reference(tokens).logits, atol=1e-6, rtol=0)


def test_unknown_module_is_an_error():
    with pytest.raises(AdapterMismatchError, match=r"model\.layers\.7\.self_attn\.q_proj.*does not exist"):
        apply_deltas(llama(), {"model.layers.7.self_attn.q_proj": torch.zeros(32, 32)})


def test_shape_mismatch_is_an_error_and_names_both_shapes():
    model = llama()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(AdapterMismatchError, match=r"v_proj.*\(32, 32\).*\(16, 32\)"):
        apply_deltas(model, {V: torch.zeros(32, 32)})
    with pytest.raises(AdapterMismatchError, match=r"v_proj.*\(16, 64\).*\(16, 32\)"):
        apply_deltas(model, {V: factors(16, 64, 2)})
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_non_linear_module_and_duplicates_are_errors():
    with pytest.raises(AdapterMismatchError, match=r"model\.norm.*not Linear"):
        apply_deltas(llama(), {"model.norm": torch.zeros(32, 32)})
    with pytest.raises(ValueError, match="twice"):
        apply_deltas(llama(), [(Q, torch.zeros(32, 32)), (Q, torch.zeros(32, 32))])
