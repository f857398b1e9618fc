"""Learned CAT: only its per-module scalars train, experts stay frozen, and its output is exact."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig

from benchmark.apply import apply_deltas
from benchmark.method import MergeContext
from benchmark.micro.tokenizer import train_tokenizer
from benchmark.suite import LoraRecipe
from benchmark.training import Trainer
from methods.cat import Cat, CatLinear
from tests.lora_fixtures import add_dense, one_thread, save_random_peft_expert, tiny_llama

TEXTS = ["Question: Ann has 3 pens. Answer: 3 + 4 = 7", "Instruction: print it\nProgram:\nprint(3 + 4)"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    with one_thread():
        tokenizer = train_tokenizer(TEXTS * 5, vocab_size=300)
        base = tiny_llama(vocab_size=len(tokenizer))
        folder = tmp_path_factory.mktemp("experts")
        config_a = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
        config_b = LoraConfig(r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "o_proj"])
        a, _ = save_random_peft_expert(base, config_a, folder / "math", seed=1)
        b, _ = save_random_peft_expert(base, config_b, folder / "code", seed=2)
        yield tokenizer, base, [a, b]


def examples(n: int) -> dict[str, list[dict]]:
    return {"math": [{"prompt": "Question: Ann has 3 pens.", "completion": " Answer: 3 + 4 = 7"}] * n,
            "code": [{"prompt": "Instruction: print it\nProgram:\n", "completion": "print(3 + 4)"}] * n}


def run_cat(setup, captured: list | None = None, **params):
    tokenizer, base, experts = setup
    trainer = Trainer(tokenizer, LoraRecipe(max_length=64))
    if captured is not None:
        real_fit = trainer.fit

        def spy(model, parameters, *args, **kwargs):
            captured.extend(parameters)
            captured.append(model)
            return real_fit(model, parameters, *args, **kwargs)

        trainer.fit = spy
    context = MergeContext(seed=0, skills=["math", "code"], skill_data=examples(40),
                           load_base=lambda: copy.deepcopy(base), tokenizer=tokenizer, trainer=trainer)
    with one_thread():
        return Cat(steps=15, lr=0.2, batch_size=4, sample_fraction=0.25, **params).merge(experts, context)


def test_only_the_scalars_train_and_the_experts_stay_frozen(setup):
    _, base, experts = setup
    before = {(e.name, m): (f.A.clone(), f.B.clone()) for e in experts for m, f in e.modules.items()}
    base_before = {k: v.clone() for k, v in base.state_dict().items()}
    captured: list = []
    result = run_cat(setup, captured)
    *trained, model = captured
    modules = {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj",
               "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.v_proj",
               "model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"}
    cat_layers = {n: m for n, m in model.named_modules() if isinstance(m, CatLinear)}
    assert set(cat_layers) == modules
    assert {id(p) for p in trained} == {id(layer.logits) for layer in cat_layers.values()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in trained}
    for e in experts:
        for m, f in e.modules.items():
            assert torch.equal(f.A, before[(e.name, m)][0]) and torch.equal(f.B, before[(e.name, m)][1])
    for k, v in base.state_dict().items():
        assert torch.equal(v, base_before[k])
    weights = result.info["module_weights"]
    shared = weights["model.layers.0.self_attn.q_proj"]
    assert sum(shared) == pytest.approx(1.0, abs=1e-6)  # softmax across the experts of a module
    assert shared != pytest.approx([0.5, 0.5], abs=1e-4)  # and it learned something
    assert result.info["n_train_examples"] == 20  # 25% of each skill's 40 examples


def test_output_is_the_weighted_sum_of_the_expert_deltas(setup):
    _, base, experts = setup
    result = run_cat(setup)
    weights = result.info["module_weights"]
    deltas = result.deltas
    for module, factors in deltas.items():
        expected = sum(w * e.modules[module].delta() for w, e in zip(weights[module], experts) if module in e.modules)
        assert torch.allclose(factors.delta(), expected, atol=1e-6)
        assert factors.rank == sum(e.modules[module].rank for e in experts if module in e.modules)
    merged = copy.deepcopy(base)
    apply_deltas(merged, result)
    reference = add_dense(base, {m: f.delta() for m, f in deltas.items()})
    ids = torch.randint(0, base.config.vocab_size, (2, 7))
    assert torch.allclose(merged(ids).logits, reference(ids).logits, atol=1e-5)


def test_cat_layer_equals_base_plus_weighted_deltas(setup):
    _, base, experts = setup
    module = "model.layers.0.self_attn.q_proj"
    linear = copy.deepcopy(base.get_submodule(module))
    layer = CatLinear(linear, [e.modules[module] for e in experts], "softmax")
    with torch.no_grad():
        layer.logits.copy_(torch.tensor([0.3, -1.2]))
    w = torch.softmax(torch.tensor([0.3, -1.2]), 0)
    x = torch.randn(3, linear.in_features)
    dense = linear.weight + w[0] * experts[0].modules[module].delta() + w[1] * experts[1].modules[module].delta()
    assert torch.allclose(layer(x), x @ dense.T, atol=1e-5)


def test_unnormalised_mode_and_a_bad_mode(setup):
    result = run_cat(setup, normalize="none")
    assert all(len(w) == 2 for w in result.info["module_weights"].values())
    with pytest.raises(ValueError, match="normalize"):
        run_cat(setup, normalize="sigmoid")
