"""ties, magnitude_prune, dare_linear, dare_ties, svd and lorahub against independent references.

References: `peft.utils.merge_utils` on dense deltas (bare experts built from random factors, and
PEFT-saved adapters read back with `load_expert`, whose dense deltas come from PEFT's own
`merge_and_unload`), peft's `add_weighted_adapter(..., "svd")`, a dense SVD, and for LoraHub a
per-example loss computed here without padding.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, PeftModel
from peft.utils import merge_utils

from benchmark.adapters import expert_from_peft_model
from benchmark.apply import apply_deltas
from benchmark.catalog import build_registry, create_method
from benchmark.lora import Expert, LoraFactors, module_union
from benchmark.method import Consumes, MergeContext
from benchmark.micro.tokenizer import train_tokenizer
from benchmark.suite import LoraRecipe
from benchmark.training import train_lora
from methods.lorahub import LoraHub, one_plus_one_es
from methods.svd import Svd
from methods.task_arithmetic import TaskArithmetic
from lora_fixtures import (add_dense, bare_experts, one_thread, random_factors, save_random_peft_expert,
                           stacked_deltas, tiny_gpt2, tiny_llama)

pytestmark = [pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning"),
              pytest.mark.filterwarnings("ignore:The density .* no pruning:UserWarning")]
TOKENS = torch.tensor([[1, 5, 9, 42, 7, 3, 99, 0, 17, 64]])
NEW = ["ties", "dare_linear", "dare_ties", "magnitude_prune", "svd", "lorahub"]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


def merged(method, experts: list[Expert], seed: int = 0) -> dict[str, torch.Tensor | LoraFactors]:
    return dict(method.merge(experts, MergeContext(seed=seed)).items())


def dense(delta: torch.Tensor | LoraFactors) -> torch.Tensor:
    return delta.delta() if isinstance(delta, LoraFactors) else delta


def peft_reference(name: str, stacked: list[torch.Tensor], w: torch.Tensor, density: float,
                   sign: str = "total") -> torch.Tensor:
    if name == "ties":
        return merge_utils.ties(stacked, w, density, sign)
    return merge_utils.magnitude_prune(stacked, w, density)


@pytest.mark.parametrize("density", [0.75, 0.3, 1.0])
@pytest.mark.parametrize("weights", [None, [0.7, -0.3], [1.0, 2.5]])  # 2.5: weighting before election would differ
@pytest.mark.parametrize("name, sign", [("ties", "total"), ("ties", "frequency"), ("magnitude_prune", None)])
def test_trimming_methods_equal_peft(name, sign, weights, density):
    experts = bare_experts()
    params = {"weights": weights, "density": density} | ({"majority_sign_method": sign} if sign else {})
    result = merged(create_method(name, params, []), experts)
    assert list(result) == module_union(experts)
    w = torch.tensor(weights or [1.0, 1.0])
    for module, delta in result.items():
        stacked = stacked_deltas(experts, module)
        torch.testing.assert_close(delta, peft_reference(name, stacked, w, density, sign or "total"), atol=1e-6, rtol=0)
        # add_weighted_adapter leaves out an adapter lacking the module; counting it as zeros is the same
        held = [i for i, e in enumerate(experts) if module in e.modules]
        skipped = peft_reference(name, [stacked[i] for i in held], w[held], density, sign or "total")
        torch.testing.assert_close(delta, skipped, atol=1e-6, rtol=0)
        if density < 1:  # trimming did something
            assert not torch.allclose(delta, merge_utils.task_arithmetic(stacked, w), atol=1e-3)


@pytest.mark.parametrize("weights", [None, [0.7, -0.3]])
@pytest.mark.parametrize("name", ["dare_linear", "dare_ties"])
def test_dare_equals_peft_given_the_same_draws(name, weights):
    experts, density, seed = bare_experts(), 0.6, 7
    result = merged(create_method(name, {"weights": weights, "density": density}, []), experts, seed)
    w = torch.tensor(weights or [1.0, 1.0])
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # peft draws from torch's global generator, module after module
        for module in module_union(experts):
            stacked = stacked_deltas(experts, module)
            expected = (merge_utils.dare_linear(stacked, w, density) if name == "dare_linear"
                        else merge_utils.dare_ties(stacked, w, density, "total"))
            torch.testing.assert_close(result[module], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["dare_linear", "dare_ties"])
def test_dare_keeps_density_rescales_and_is_seeded(name):
    expert = Expert("big", {"m": random_factors((128, 160), 8, 2.0, torch.Generator().manual_seed(0))})
    full = expert.modules["m"].delta()
    assert (full != 0).all()
    method = create_method(name, {"density": 0.75}, [])
    out = merged(method, [expert], seed=3)["m"]
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.02
    torch.testing.assert_close(out[kept], full[kept] / 0.75, atol=0, rtol=1e-6)
    assert torch.equal(merged(method, [expert], seed=3)["m"], out)
    other = merged(method, [expert], seed=4)["m"]
    assert (kept != (other != 0)).float().mean() > 0.2  # a different mask, not a few flips


def test_svd_at_full_rank_is_task_arithmetic():
    experts, w = bare_experts(), [0.7, -1.3]
    result = Svd(weights=w, rank=64).merge(experts, MergeContext(seed=0))
    assert result.output_rank == 6  # capped at q's 4 + 2
    deltas = dict(result.items())
    assert {m: f.rank for m, f in deltas.items()} == {"layer.q": 6, "layer.v": 4, "layer.o": 2}
    for module, delta in merged(TaskArithmetic(weights=w), experts).items():
        torch.testing.assert_close(deltas[module].delta(), delta, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rank", [None, 1, 3])
def test_svd_at_rank_k_is_the_best_rank_k_approximation(rank):
    experts = bare_experts()
    result = Svd(rank=rank).merge(experts, MergeContext(seed=0))
    default = {"layer.q": 4, "layer.v": 4, "layer.o": 2}  # max expert rank at each module
    target = merged(TaskArithmetic(), experts)
    for module, factors in result.items():
        k = default[module] if rank is None else min(rank, default[module] if module != "layer.q" else 6)
        assert isinstance(factors, LoraFactors) and factors.rank == k
        U, S, Vh = torch.linalg.svd(target[module])
        approx = factors.delta()
        torch.testing.assert_close(torch.linalg.svdvals(approx)[:k], S[:k], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(approx, (U[:, :k] * S[:k]) @ Vh[:k], atol=1e-5, rtol=0)
        residual = (target[module] - approx).norm() ** 2  # Eckart-Young
        assert residual.item() == pytest.approx((S[k:] ** 2).sum().item(), rel=1e-4, abs=1e-6)
    assert result.output_rank == (4 if rank is None else min(rank, 6))


@pytest.mark.parametrize("method", [create_method("ties", {"density": 1.0}, []), Svd(), Svd(rank=100)])
def test_one_expert_with_weight_one_is_reproduced(method):
    expert = bare_experts()[0]
    out = merged(method, [expert])
    assert sorted(out) == sorted(expert.modules)
    for module, delta in out.items():
        torch.testing.assert_close(dense(delta), expert.modules[module].delta(), atol=1e-5, rtol=0)


# --- end to end: PEFT-saved adapters read with load_expert ------------------------------------------

ARCHS = {
    "llama": (tiny_llama, {
        "math": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                           rank_pattern={"layers.0.self_attn.q_proj": 2}, alpha_pattern={"v_proj": 3}),
        "code": LoraConfig(r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "o_proj", "down_proj"]),
    }),
    "gpt2": (tiny_gpt2, {  # Conv1D layers: the (in, out) weight layout
        "math": LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True),
        "code": LoraConfig(r=2, lora_alpha=4, use_rslora=True, target_modules=["c_attn", "c_fc"],
                           fan_in_fan_out=True),
    }),
}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def saved(request, tmp_path_factory):
    build, configs = ARCHS[request.param]
    base, root = build(), tmp_path_factory.mktemp(request.param)
    experts, dense_deltas = [], []
    for seed, (skill, config) in enumerate(configs.items()):
        expert, deltas = save_random_peft_expert(base, config, root / skill, seed + 1)
        experts.append(expert)
        dense_deltas.append(deltas)
    return base, root, experts, dense_deltas


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS).logits


@pytest.mark.parametrize("name", ["ties", "magnitude_prune"])
def test_saved_adapters_merge_as_peft_says(saved, name):
    base, _, experts, dense_deltas = saved
    w = torch.tensor([1.0, 0.6])
    result = create_method(name, {"weights": w.tolist()}, []).merge(experts, MergeContext(seed=0))
    model = copy.deepcopy(base)
    apply_deltas(model, result)
    expected = {}
    for module in module_union(experts):
        shape = next(d[module].shape for d in dense_deltas if module in d)
        stacked = [d.get(module, torch.zeros(shape)) for d in dense_deltas]
        expected[module] = peft_reference(name, stacked, w, 0.75)
    reference = add_dense(base, expected)
    torch.testing.assert_close(logits(model), logits(reference), atol=1e-5, rtol=0)
    assert not torch.allclose(logits(reference), logits(base), atol=1e-3)


def test_svd_equals_peft_add_weighted_adapter(saved):
    base, root, experts, _ = saved
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), root / "math", adapter_name="math")
    peft_model.load_adapter(root / "code", adapter_name="code")
    peft_model.add_weighted_adapter(["math", "code"], [0.8, 1.2], "svd_merge", combination_type="svd", svd_rank=3)
    peft_model.set_adapter("svd_merge")
    ours = copy.deepcopy(base)
    apply_deltas(ours, Svd(weights=[0.8, 1.2], rank=3).merge(experts, MergeContext(seed=0)))
    torch.testing.assert_close(logits(ours), logits(peft_model.eval()), atol=1e-5, rtol=0)


# --- LoraHub ------------------------------------------------------------------------------------

FACTS = [("The sky is", " blue"), ("Grass is", " green"), ("Snow is", " white"), ("Coal is", " black"),
         ("Blood is", " red")]


@pytest.fixture(scope="module")
def hub():
    """A tiny Llama, its tokenizer, an expert trained on the target facts, one on wrong answers."""
    tokenizer = train_tokenizer([p + t for p, t in FACTS] * 20, vocab_size=300)
    base = tiny_llama(vocab_size=len(tokenizer))
    # lm_head too: a random 32-wide base cannot otherwise move its logits far enough to learn facts
    recipe = LoraRecipe(rank=4, alpha=8, lr=2e-2, steps=40, batch_size=5, warmup_steps=0,
                        target_modules=("q_proj", "v_proj", "down_proj", "lm_head"))
    right = [{"prompt": p, "completion": t} for p, t in FACTS]
    wrong = [{"prompt": p, "completion": FACTS[(i + 1) % len(FACTS)][1]} for i, (p, _) in enumerate(FACTS)]
    experts = [expert_from_peft_model(train_lora(copy.deepcopy(base), data, tokenizer, recipe, seed), "default", name)
               for seed, (name, data) in enumerate([("wrong", wrong), ("right", right)])]
    examples = [{"prompt": p, "target": t, "answer": t} for p, t in FACTS]
    return base, tokenizer, experts, examples


def target_loss(model, tokenizer, examples) -> float:
    """Mean over examples of the target tokens' cross-entropy, one unpadded example at a time."""
    losses = []
    for example in examples:
        prompt = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
        target = tokenizer(example["target"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        with torch.no_grad():
            log_probs = model(torch.tensor([prompt + target])).logits[0].log_softmax(-1)
        positions = range(len(prompt) - 1, len(prompt) + len(target) - 1)
        losses.append(-sum(log_probs[p, t].item() for p, t in zip(positions, target)) / len(target))
    return sum(losses) / len(losses)


def hub_context(hub, seed: int = 0, examples=None) -> MergeContext:
    base, tokenizer, _, all_examples = hub
    return MergeContext(seed=seed, target_task="facts", target_examples=all_examples if examples is None else examples,
                        load_base=lambda: copy.deepcopy(base), tokenizer=tokenizer)


def test_lorahub_favours_the_expert_that_fits_the_target(hub):
    base, tokenizer, experts, examples = hub
    result = LoraHub().merge(experts, hub_context(hub))
    info = result.info
    model = copy.deepcopy(base)
    apply_deltas(model, result)
    assert info["n_target_examples"] == 5 and info["evaluations"] == 40
    w = info["expert_weights"]
    assert w["right"] > 0.5 and w["right"] > w["wrong"], w
    found, at_zero = target_loss(model, tokenizer, examples), target_loss(base, tokenizer, examples)
    assert info["loss_at_zero"] == pytest.approx(at_zero, abs=1e-4)
    assert info["loss"] == pytest.approx(found, abs=1e-4)
    assert found < at_zero - 1.0  # the base knows nothing of these facts
    assert info["objective"] == pytest.approx(found + 0.05 * (abs(w["right"]) + abs(w["wrong"])), abs=1e-4)
    again = LoraHub().merge(experts, hub_context(hub))
    assert again.info["weights"] == info["weights"]
    assert LoraHub().merge(experts, hub_context(hub, seed=1)).info["weights"] != info["weights"]


def test_lorahub_records_examples_used_and_refuses_none(hub):
    _, _, experts, _ = hub
    result = LoraHub(n_examples=3, budget=2).merge(experts, hub_context(hub))
    assert result.info["n_target_examples"] == 3 and result.info["evaluations"] == 2
    with pytest.raises(ValueError, match="lorahub: no target examples for task 'facts'"):
        LoraHub().merge(experts, hub_context(hub, examples=[]))


def test_one_plus_one_es_minimises_within_bounds():
    def bowl(w: list[float]) -> float:
        return (w[0] - 1.0) ** 2 + (w[1] - 3.0) ** 2  # w[1]'s optimum lies outside [-1.5, 1.5]

    best, value, evaluations = one_plus_one_es(bowl, 2, 150, 1.5, seed=0)
    assert evaluations == 150 and value == bowl(best) < bowl([0.0, 0.0])
    assert best[0] == pytest.approx(1.0, abs=0.05) and best[1] == pytest.approx(1.5, abs=0.05)
    assert one_plus_one_es(bowl, 2, 150, 1.5, seed=0) == (best, value, evaluations)


@pytest.mark.parametrize("name", NEW)
def test_new_methods_are_registered_and_describe_themselves(name):
    cls = build_registry(include_entry_points=False).get(name)
    assert cls.name == name and cls.description and cls.family and cls.paper.startswith("https://arxiv.org/")
    assert cls.consumes is (Consumes.TARGET_EXAMPLES if name == "lorahub" else Consumes.NOTHING)
    assert cls.__doc__ and cls.__module__ == f"methods.{name}"
