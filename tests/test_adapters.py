"""load_expert against PEFT's own merge, adapter checks, and the save_lora_as_peft round trip.

The reference for every delta is PEFT itself: `merge_and_unload()` weight minus base weight, so
a wrong scale (rsLoRA, rank_pattern, alpha_pattern) or orientation (Conv1D) shows up here.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.other import get_pattern_key as peft_get_pattern_key
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

from benchmark.adapters import (
    AdapterMismatchError,
    check_compatible,
    expert_from_peft_model,
    get_pattern_key,
    load_expert,
    save_lora_as_peft,
)
from benchmark.apply import apply_deltas
from benchmark.lora import Expert, LoraFactors

# peft calls a transformers API that transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
TOKENS = torch.tensor([[1, 5, 9, 42, 7, 3, 99, 0]])


def llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    config = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=100)
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**config, **overrides})).eval()


def gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=16, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def trained_peft(base, config: LoraConfig, seed: int = 1):
    """A PEFT model on a copy of `base` whose LoRA factors are random (B is zero at PEFT's init)."""
    model = get_peft_model(copy.deepcopy(base), config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model.eval()


def peft_deltas(peft_model, base) -> dict[str, torch.Tensor]:
    """Dense (out, in) deltas by PEFT's own merge, for every weight that changed."""
    merged = copy.deepcopy(peft_model).merge_and_unload()
    base_params = dict(base.named_parameters())
    out = {}
    for name, param in merged.named_parameters():
        diff = param.detach() - base_params[name].detach()
        if diff.abs().max() > 0:
            module = name.removesuffix(".weight")
            out[module] = diff.T if isinstance(base.get_submodule(module), Conv1D) else diff
    return out


CASES = {
    "llama-plain": (llama, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])),
    "llama-rslora": (llama, LoraConfig(
        r=8, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "o_proj", "down_proj"])),
    "llama-patterns": (llama, LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
        rank_pattern={"layers.0.self_attn.q_proj": 2, "down_proj": 6},
        alpha_pattern={"v_proj": 3, "model.layers.1.mlp.down_proj": 5})),
    "llama-rslora-patterns": (llama, LoraConfig(
        r=4, lora_alpha=16, use_rslora=True, target_modules=["q_proj", "k_proj"], rank_pattern={"k_proj": 8})),
    "gpt2-conv1d": (gpt2, LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn", "c_fc", "c_proj"], fan_in_fan_out=True,
        rank_pattern={"h.1.attn.c_attn": 2}, alpha_pattern={"c_fc": 2})),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_expert_matches_peft_merge(case, tmp_path):
    make_base, config = CASES[case]
    base = make_base()
    peft_model = trained_peft(base, copy.deepcopy(config))
    peft_model.save_pretrained(tmp_path / "adapter")
    expert = load_expert(tmp_path / "adapter", name="skill", base_model=base)
    reference = peft_deltas(peft_model, base)
    assert set(expert.modules) == set(reference)
    for module, factors in expert.modules.items():
        torch.testing.assert_close(factors.delta(), reference[module], atol=1e-5, rtol=0)
    assert expert.name == "skill" and len(expert.fingerprint) == 64


def test_ranks_and_scales_follow_patterns(tmp_path):
    base = llama()
    trained_peft(base, copy.deepcopy(CASES["llama-patterns"][1])).save_pretrained(tmp_path)
    modules = load_expert(tmp_path).modules
    assert modules["model.layers.0.self_attn.q_proj"].rank == 2  # rank_pattern by suffix
    assert modules["model.layers.1.self_attn.q_proj"].rank == 4
    assert modules["model.layers.0.self_attn.v_proj"].scale == pytest.approx(3 / 4)  # alpha_pattern
    assert modules["model.layers.1.mlp.down_proj"].scale == pytest.approx(5 / 6)  # both patterns


@pytest.mark.parametrize("module", [
    "model.layers.0.self_attn.q_proj", "model.layers.10.self_attn.q_proj", "model.layers.1.mlp.down_proj",
    "transformer.h.1.attn.c_attn", "model.layers.0.self_attn.k_proj",
])
def test_pattern_rule_is_peft_rule(module):
    keys = [r"model\.layers\.0\.self_attn\.k_proj", "layers.1.self_attn.q_proj", "q_proj", r"layers\.1\..*proj",
            "model.layers.1.mlp.down_proj", "h.1.attn.c_attn", "attn.c_attn", "k_pro"]
    assert get_pattern_key(keys, module) == peft_get_pattern_key(keys, module)


def test_adapter_name_in_keys_and_bin_format(tmp_path):
    base = llama()
    peft_model = trained_peft(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "plain")
    reference = load_expert(tmp_path / "plain").modules
    named = tmp_path / "named"
    named.mkdir()
    (named / "adapter_config.json").write_text((tmp_path / "plain" / "adapter_config.json").read_text())
    tensors = load_file(tmp_path / "plain" / "adapter_model.safetensors")
    renamed = {k.replace(".weight", ".default.weight"): v for k, v in tensors.items()}
    save_file(renamed, named / "adapter_model.safetensors")
    peft_model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "adapter_model.bin").is_file()
    for folder in (named, tmp_path / "bin"):
        modules = load_expert(folder).modules
        assert set(modules) == set(reference)
        for module, factors in modules.items():
            torch.testing.assert_close(factors.delta(), reference[module].delta())


def test_fingerprint_is_stable_and_content_addressed(tmp_path):
    base = llama()
    peft_model = trained_peft(base, copy.deepcopy(CASES["llama-patterns"][1]))
    peft_model.save_pretrained(tmp_path / "a")
    first, again = load_expert(tmp_path / "a"), load_expert(tmp_path / "a", name="other")
    assert first.fingerprint == again.fingerprint
    assert expert_from_peft_model(peft_model, "default", "x").fingerprint == first.fingerprint
    with torch.no_grad():
        next(p for n, p in peft_model.named_parameters() if "lora_B" in n)[0, 0] += 1.0
    peft_model.save_pretrained(tmp_path / "b")
    assert load_expert(tmp_path / "b").fingerprint != first.fingerprint


def test_expert_from_peft_model_matches_merge_and_is_a_copy():
    base = llama()
    peft_model = trained_peft(base, copy.deepcopy(CASES["llama-rslora"][1]))
    expert = expert_from_peft_model(peft_model, "default", "code")
    reference = peft_deltas(peft_model, base)
    for module, factors in expert.modules.items():
        torch.testing.assert_close(factors.delta(), reference[module], atol=1e-5, rtol=0)
    before = next(iter(expert.modules.values())).B.clone()
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.zero_()
    assert torch.equal(next(iter(expert.modules.values())).B, before)


@pytest.mark.parametrize("field,value", [("use_dora", True), ("peft_type", "IA3"), ("modules_to_save", ["lm_head"]),
                                         ("init_lora_weights", "pissa"), ("lora_bias", True)])
def test_unsupported_features_are_refused(tmp_path, field, value):
    trained_peft(llama(), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config[field] = value
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"'my-adapter'.*{field}"):
        load_expert(tmp_path, name="my-adapter")


def test_dropout_is_fine(tmp_path):
    config = LoraConfig(r=2, lora_dropout=0.1, target_modules=["q_proj"])
    trained_peft(llama(), config).save_pretrained(tmp_path)
    assert len(load_expert(tmp_path).modules) == 2


def test_other_hidden_size_is_a_mismatch(tmp_path):
    trained_peft(llama(hidden_size=48), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path)
    message = r"'wide'.*model\.layers\.\d\.self_attn\.q_proj.*\(48, 48\).*\(32, 32\)"
    with pytest.raises(AdapterMismatchError, match=message):
        load_expert(tmp_path, name="wide", base_model=llama())


def test_module_missing_from_base_is_a_mismatch(tmp_path):
    trained_peft(llama(num_hidden_layers=3), LoraConfig(r=2, target_modules=["v_proj"])).save_pretrained(tmp_path)
    expert = load_expert(tmp_path, name="deep")
    with pytest.raises(AdapterMismatchError, match=r"'deep'.*model\.layers\.2\.self_attn\.v_proj.*does not exist"):
        check_compatible(expert, llama())


def test_non_linear_module_is_a_mismatch():
    expert = Expert("norm", {"model.norm": LoraFactors(torch.ones(1, 32), torch.ones(32, 1), 1.0)})
    with pytest.raises(AdapterMismatchError, match=r"model\.norm.*LlamaRMSNorm"):
        check_compatible(expert, llama())


def test_declared_base_must_match(tmp_path):
    trained_peft(llama(), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "org/base-a"}))
    expert = load_expert(tmp_path, name="a")
    assert expert.metadata["base_model_name_or_path"] == "org/base-a"
    check_compatible(expert, llama(), declared_base="org/base-a/")
    with pytest.raises(AdapterMismatchError, match=r"'a'.*org/base-a.*org/base-b"):
        check_compatible(expert, llama(), declared_base="org/base-b")


def random_factors(shape: tuple[int, int], rank: int, scale: float, seed: int) -> LoraFactors:
    generator = torch.Generator().manual_seed(seed)
    return LoraFactors(torch.randn(rank, shape[1], generator=generator) * 0.3,
                       torch.randn(shape[0], rank, generator=generator) * 0.3, scale)


@pytest.mark.parametrize("make_base,shapes", [
    (llama, {"model.layers.0.self_attn.q_proj": (32, 32), "model.layers.1.self_attn.v_proj": (16, 32),
             "model.layers.1.mlp.down_proj": (32, 64)}),
    (gpt2, {"transformer.h.0.attn.c_attn": (96, 32), "transformer.h.1.mlp.c_proj": (32, 128)}),
])
def test_save_lora_as_peft_round_trip(tmp_path, make_base, shapes):
    base = make_base()
    deltas = {m: random_factors(s, rank=2 + i * 3, scale=0.5 + i, seed=i) for i, (m, s) in enumerate(shapes.items())}
    save_lora_as_peft(deltas, base, tmp_path / "merged")
    reloaded = load_expert(tmp_path / "merged", base_model=base)
    assert {m: f.rank for m, f in reloaded.modules.items()} == {m: f.rank for m, f in deltas.items()}
    for module, factors in deltas.items():
        torch.testing.assert_close(reloaded.modules[module].delta(), factors.delta(), atol=1e-6, rtol=0)
    merged = copy.deepcopy(base)
    apply_deltas(merged, deltas)
    via_peft = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "merged").eval()
    with torch.no_grad():
        expected, got = merged(TOKENS).logits, via_peft(TOKENS).logits
        assert not torch.allclose(expected, base(TOKENS).logits, atol=1e-3)  # the deltas do something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_save_lora_as_peft_refuses_wrong_shapes(tmp_path):
    deltas = {"model.layers.0.self_attn.q_proj": random_factors((16, 32), 2, 1.0, 0)}
    with pytest.raises(AdapterMismatchError, match=r"q_proj.*\(16, 32\).*\(32, 32\)"):
        save_lora_as_peft(deltas, llama(), tmp_path)
