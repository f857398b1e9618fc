"""`soupbench merge` against mergekit (an independent implementation) on full models from PEFT experts.

mergekit merges full models: each PEFT expert is merged into the base (`merge_and_unload`) and
saved, and mergekit computes the task vectors back as model - base. Its TIES with `normalize:
true` and weights 1 is the disjoint mean of TIES's paper (and of peft), its task arithmetic is the
plain weighted sum. The two agree up to the float32 rounding of (base + dW) - base, hence the
tolerance. mergekit is in the `test` extra (and the `bench` one), so this file always runs in CI.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel
from safetensors.torch import load_file

from benchmark.merge_tool import merge_to_folder
from tests.lora_fixtures import save_random_peft_expert, tiny_llama

import mergekit.merge as mergekit_merge  # noqa: E402
from mergekit.config import MergeConfiguration  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mergekit")
    base = tiny_llama(vocab_size=128)
    base.save_pretrained(root / "base")
    configs = {"math": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]),
               "code": LoraConfig(r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "o_proj"])}
    adapters, fulls = [], []
    for seed, (name, config) in enumerate(configs.items()):
        save_random_peft_expert(base, config, root / name, seed=seed + 1)
        full = PeftModel.from_pretrained(copy.deepcopy(base), str(root / name)).merge_and_unload()
        full.save_pretrained(root / f"{name}-full")
        adapters.append(str(root / name))
        fulls.append(str(root / f"{name}-full"))
    return {"root": root, "base": str(root / "base"), "adapters": adapters, "fulls": fulls}


def run_mergekit(world: dict, method: str, per_model: dict, out: Path, normalize: bool) -> dict[str, torch.Tensor]:
    config = {"merge_method": method, "base_model": world["base"], "dtype": "float32",
              "parameters": {"normalize": normalize},
              "models": [{"model": m, "parameters": per_model} for m in world["fulls"]]}
    mergekit_merge.run_merge(MergeConfiguration.model_validate(yaml.safe_load(yaml.safe_dump(config))), str(out),
                             mergekit_merge.MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
    return {k: v for f in sorted(out.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


@pytest.mark.parametrize("method,per_model,normalize", [
    ("task_arithmetic", {"weight": 1.0}, False),
    ("ties", {"weight": 1.0, "density": 0.75}, True),
])
def test_ties_and_task_arithmetic_equal_mergekits(world, tmp_path, method, per_model, normalize):
    theirs = run_mergekit(world, method, per_model, tmp_path / "mergekit", normalize)
    merge_to_folder(world["base"], world["adapters"], method, tmp_path / "soup")
    soup = load_file(str(tmp_path / "soup" / "model.safetensors"))
    base = load_file(str(Path(world["base"]) / "model.safetensors"))
    changed = 0
    for name, tensor in soup.items():
        if name not in theirs:  # mergekit leaves out a tied duplicate; Llama here ties nothing
            continue
        scale = float((tensor - base[name]).abs().max()) or 1.0
        assert float((tensor - theirs[name]).abs().max()) <= 1e-5 * scale + 1e-7, name
        changed += not torch.equal(tensor, base[name])
    assert changed == 2 * 4  # q, v, up and o of each of the two layers
