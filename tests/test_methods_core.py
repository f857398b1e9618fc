"""base, expert-<skill>, task_arithmetic and cat_static against independent PEFT references.

Two experts on a tiny Llama that differ in rank, scaling (rsLoRA), patterns and targets: `math`
adapts q_proj/v_proj, `code` adapts q_proj/o_proj/down_proj. References are PEFT's own merge
(`merge_and_unload`), `peft.utils.merge_utils.task_arithmetic`, and PEFT running both adapters
at once.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import merge_utils
from transformers import LlamaConfig, LlamaForCausalLM

from benchmark.adapters import load_expert
from benchmark.apply import apply_deltas
from benchmark.catalog import create_method
from benchmark.lora import LoraFactors, module_union
from benchmark.method import Consumes, MergeContext
from methods._ops import weighted_sum
from methods.base import Base
from methods.cat_static import CatStatic
from methods.single_expert import SingleExpert
from methods.task_arithmetic import TaskArithmetic

# peft calls a transformers API that transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
TOKENS = torch.tensor([[1, 5, 9, 42, 7, 3, 99, 0, 17, 64]])
CONFIGS = {
    "math": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                       rank_pattern={"layers.0.self_attn.q_proj": 2}, alpha_pattern={"v_proj": 3}),
    "code": LoraConfig(r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "o_proj", "down_proj"]),
}
CTX = MergeContext(seed=0)


def llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The base, each expert's folder, its Expert, and PEFT's dense merge delta per module."""
    base = llama()
    root = tmp_path_factory.mktemp("experts")
    experts, dense = {}, {}
    for seed, (skill, config) in enumerate(CONFIGS.items()):
        model = get_peft_model(copy.deepcopy(base), copy.deepcopy(config))  # mutates its argument
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:  # B is zero at PEFT's init: make every factor random
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        model.save_pretrained(root / skill)
        experts[skill] = load_expert(root / skill, name=skill, base_model=base)
        merged = model.merge_and_unload()
        dense[skill] = {m: merged.get_submodule(m).weight.detach() - base.get_submodule(m).weight.detach()
                        for m in experts[skill].modules}
    return base, root, experts, dense


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS).logits


def merged_logits(base, result) -> torch.Tensor:
    model = copy.deepcopy(base)
    apply_deltas(model, result)
    return logits(model)


def both_adapters(base, root, weights=(1.0, 1.0)):
    """PEFT with both adapters active at once, each layer's scale multiplied by its weight."""
    model = PeftModel.from_pretrained(copy.deepcopy(base), root / "math", adapter_name="math")
    model.load_adapter(root / "code", adapter_name="code")
    model.base_model.set_adapter(["math", "code"])  # PeftModel.set_adapter takes one name only
    for layer in model.modules():
        if isinstance(layer, LoraLayer):
            for adapter, weight in zip(("math", "code"), weights):
                layer.set_scale(adapter, weight)  # scaling = weight * alpha / r (or / sqrt r)
    return model.eval()


@pytest.mark.parametrize("weights", [None, [0.7, -0.3]])
def test_task_arithmetic_matches_peft_merge_utils(setup, weights):
    base, _, experts, dense = setup
    result = TaskArithmetic(weights=weights).merge([experts["math"], experts["code"]], CTX)
    deltas = dict(result.items())
    modules = module_union([experts["math"], experts["code"]])
    assert sorted(deltas) == sorted(modules)
    w = torch.tensor(weights or [1.0, 1.0])
    reference = copy.deepcopy(base)
    for module in modules:
        shape = reference.get_submodule(module).weight.shape
        stacked = [dense[s].get(module, torch.zeros(shape)) for s in ("math", "code")]
        expected = merge_utils.task_arithmetic(stacked, w)
        torch.testing.assert_close(deltas[module], expected, atol=1e-6, rtol=0)
        with torch.no_grad():
            reference.get_submodule(module).weight += expected
    torch.testing.assert_close(merged_logits(base, deltas), logits(reference), atol=1e-5, rtol=0)
    assert not torch.allclose(logits(reference), logits(base), atol=1e-3)


def test_task_arithmetic_weights_must_match_experts(setup):
    _, _, experts, _ = setup
    with pytest.raises(ValueError, match=r"task_arithmetic: 3 weights given for 2 experts \(math, code\)"):
        TaskArithmetic(weights=[1, 1, 1]).merge([experts["math"], experts["code"]], CTX)


def test_cat_static_equals_both_adapters_active(setup):
    base, root, experts, _ = setup
    result = CatStatic().merge([experts["math"], experts["code"]], CTX)
    assert all(isinstance(d, LoraFactors) for d in result.deltas.values())
    shared = "model.layers.1.self_attn.q_proj"  # math rank 4 + code rank 2
    assert result.deltas[shared].rank == 6 and result.deltas["model.layers.0.self_attn.q_proj"].rank == 2 + 2
    assert result.deltas["model.layers.0.self_attn.v_proj"].rank == 4  # math only
    assert result.output_rank == 6
    torch.testing.assert_close(merged_logits(base, result), logits(both_adapters(base, root)), atol=1e-5, rtol=0)


def test_cat_static_weights_scale_each_expert(setup):
    base, root, experts, dense = setup
    weights = [0.5, -1.5]
    result = CatStatic(weights=weights).merge([experts["math"], experts["code"]], CTX)
    for module, factors in result.deltas.items():
        expected = sum(w * dense[s][module] for s, w in zip(("math", "code"), weights) if module in dense[s])
        torch.testing.assert_close(factors.delta(), expected, atol=1e-6, rtol=0)
    peft_logits = logits(both_adapters(base, root, weights))
    torch.testing.assert_close(merged_logits(base, result), peft_logits, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="cat_static: 1 weights given for 2 experts"):
        CatStatic(weights=[1.0]).merge([experts["math"], experts["code"]], CTX)


@pytest.mark.parametrize("skill", ["math", "code"])
@pytest.mark.parametrize("route", ["task_arithmetic", "cat_static", "expert"])
def test_single_expert_routes_give_its_own_merged_model(setup, skill, route):
    base, root, experts, _ = setup
    if route == "expert":
        method, given = create_method(f"expert-{skill}", {}, ["math", "code"]), list(experts.values())
    else:
        method, given = create_method(route, {}, ["math", "code"]), [experts[skill]]
    result = method.merge(given, CTX)
    own = PeftModel.from_pretrained(copy.deepcopy(base), root / skill).merge_and_unload()
    torch.testing.assert_close(merged_logits(base, result), logits(own.eval()), atol=1e-5, rtol=0)


def test_expert_returns_factors_unchanged(setup):
    _, _, experts, _ = setup
    method = SingleExpert(skill="code")
    result = method.merge(list(experts.values()), CTX)
    assert result.deltas == experts["code"].modules and result.output_rank == 2
    assert method.display_name == "expert-code"
    with pytest.raises(ValueError, match=r"expert-law: no expert for skill 'law'; experts given: math, code"):
        SingleExpert(skill="law").merge(list(experts.values()), CTX)


def test_base_changes_nothing(setup):
    base, _, experts, _ = setup
    result = Base().merge(list(experts.values()), CTX)
    assert dict(result.items()) == {} and result.output_rank == 0
    torch.testing.assert_close(merged_logits(base, result), logits(base), atol=0, rtol=0)


def test_weighted_sum_on_bare_tensors():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(weighted_sum([a, b], [2.0, -0.5]), 2 * a - 0.5 * b)
    with pytest.raises(ValueError, match="2 deltas but 1 weights"):
        weighted_sum([a, b], [1.0])


@pytest.mark.parametrize("cls", [Base, SingleExpert, TaskArithmetic, CatStatic])
def test_methods_describe_themselves(cls):
    assert cls.name and cls.description and cls.family
    assert cls.paper.startswith("https://") or cls is Base
    assert isinstance(cls.consumes, Consumes)
