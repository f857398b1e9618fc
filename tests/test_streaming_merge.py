"""`soupbench merge` streamed from the base's files equals the in-memory merge, tensor for tensor.

A tiny random Llama saved as one file and as several shards, two PEFT experts of different ranks
and targets (one rsLoRA). For every method that streams, the streamed folder and the in-memory
folder (`stream=False`: load, `apply_deltas`, `save_pretrained`) must hold the same tensor names,
dtypes and values (torch.equal), and the streamed one must load with `from_pretrained`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from benchmark.merge_tool import CARD_JSON, merge_to_folder
from benchmark.micro.tokenizer import train_tokenizer
from benchmark.streaming import INDEX_FILE, SINGLE_FILE
from tests.lora_fixtures import save_random_peft_expert, tiny_llama

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VOCAB = 300
STREAMING = ["task_arithmetic", "ties", "dare_ties", "dare_linear", "magnitude_prune", "svd", "cat_static"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("stream")
    model = tiny_llama(vocab_size=VOCAB)
    tokenizer = train_tokenizer(["def total(n): return n * 3", "press 42 to start"] * 10, VOCAB)
    bases = {"single": root / "base", "sharded": root / "base-sharded", "bf16": root / "base-bf16"}
    model.save_pretrained(bases["single"])
    model.save_pretrained(bases["sharded"], max_shard_size="40KB")
    model.to(torch.bfloat16).save_pretrained(bases["bf16"])
    model.float()
    for folder in bases.values():
        tokenizer.save_pretrained(folder)
    configs = {"math": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]),
               "code": LoraConfig(r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "o_proj", "down_proj"])}
    adapters = []
    for seed, (name, config) in enumerate(configs.items()):
        save_random_peft_expert(model, config, root / name, seed=seed + 1)
        adapters.append(str(root / name))
    return {"root": root, "bases": bases, "adapters": adapters}


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        found.update(load_file(str(file)))
    return found


def assert_same_tensors(a: Path, b: Path) -> None:
    left, right = tensors(a), tensors(b)
    assert sorted(left) == sorted(right)
    for name in left:
        assert left[name].dtype == right[name].dtype, name
        assert torch.equal(left[name], right[name]), name


def merge(world: dict, tmp: Path, method: str, base: str = "single", **options) -> tuple[Path, dict]:
    out = tmp / f"{method}-{base}-{'-'.join(f'{k}{v}' for k, v in options.items())}"
    card = merge_to_folder(str(world["bases"][base]), world["adapters"], method, out, seed=3, **options)
    return out, card


@pytest.mark.parametrize("method", STREAMING)
def test_streamed_merge_equals_the_in_memory_merge(world, tmp_path, method):
    streamed, card = merge(world, tmp_path, method)
    in_memory, memory_card = merge(world, tmp_path, method, stream=False)
    assert card["streamed"] is True and memory_card["streamed"] is False
    assert_same_tensors(streamed, in_memory)
    base = tensors(world["bases"]["single"])
    changed = [n for n, t in tensors(streamed).items() if not torch.equal(t, base[n])]
    assert "model.layers.0.mlp.up_proj.weight" in changed and "model.layers.1.self_attn.o_proj.weight" in changed
    assert "model.layers.0.self_attn.k_proj.weight" not in changed  # no expert adapts k_proj


def test_sharded_output_loads_and_computes_what_the_in_memory_model_does(world, tmp_path):
    streamed, _ = merge(world, tmp_path, "ties", max_shard_bytes=30_000)
    index = json.loads((streamed / INDEX_FILE).read_text())
    shards = sorted(streamed.glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and not (streamed / SINGLE_FILE).exists()
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors(streamed).values())
    in_memory, _ = merge(world, tmp_path, "ties", stream=False)
    ids = torch.arange(1, 17).view(2, 8) * 7 % VOCAB
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(streamed).eval()(input_ids=ids).logits
        want = AutoModelForCausalLM.from_pretrained(in_memory).eval()(input_ids=ids).logits
    assert torch.equal(got, want)
    assert json.loads((streamed / CARD_JSON).read_text())["streamed"] is True
    assert (streamed / "tokenizer.json").is_file() and (streamed / "config.json").is_file()


@pytest.mark.parametrize("method", ["task_arithmetic", "dare_ties"])
def test_a_sharded_base_streams_to_the_same_model(world, tmp_path, method):
    assert len(list(world["bases"]["sharded"].glob("*.safetensors"))) > 1
    streamed, card = merge(world, tmp_path, method, base="sharded")
    assert card["streamed"] is True
    assert_same_tensors(streamed, merge(world, tmp_path, method, stream=False)[0])


def test_bfloat16_base_rounds_once_as_in_memory(world, tmp_path):
    streamed, card = merge(world, tmp_path, "ties", base="bf16")
    assert card["streamed"] is True
    assert tensors(streamed)["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16
    assert_same_tensors(streamed, merge(world, tmp_path, "ties", base="bf16", stream=False)[0])


@pytest.mark.parametrize("method", ["ties", "dare_ties", "task_arithmetic"])
def test_two_threads_merge_exactly_what_one_does(world, tmp_path, method):
    one, _ = merge(world, tmp_path, method, threads=1)
    two, _ = merge(world, tmp_path, method, threads=2)
    assert_same_tensors(one, two)


def test_a_base_that_cannot_stream_is_merged_in_memory_and_says_why(world, tmp_path):
    base = tmp_path / "declared-bf16"  # float32 files under a config that loads bfloat16: copying would differ
    base.mkdir()
    for file in world["bases"]["single"].iterdir():
        (base / file.name).write_bytes(file.read_bytes())
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    world = {**world, "bases": {**world["bases"], "declared": base}}
    said: list[str] = []
    out, card = merge(world, tmp_path, "task_arithmetic", base="declared", report=said.append)
    assert card["streamed"] is False
    assert any("cannot stream" in line and "bfloat16" in line for line in said)
    assert tensors(out)["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16
