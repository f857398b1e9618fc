"""Results of methods that train, kept by content (benchmark.merge_cache)."""

from __future__ import annotations

import torch

from benchmark import catalog, merge_cache
from benchmark.keys import trained_merge_key
from benchmark.lora import LoraFactors
from benchmark.method import MergeResult
from benchmark.suite import load_suite

SKILLS = ["math", "code"]


def test_a_saved_result_loads_back_exactly_with_its_cost(tmp_path):
    g = torch.Generator().manual_seed(0)
    factors = LoraFactors(A=torch.randn(4, 8, generator=g), B=torch.randn(6, 4, generator=g), scale=2.5)
    dense = torch.randn(6, 8, generator=g)
    lazy = iter([("layers.0.q_proj", factors), ("layers.0.o_proj", dense)])
    cost = {"merge_seconds": 12.5, "peak_memory_mb": 800.0, "hostname": "h", "device": "cpu"}
    returned = merge_cache.save(tmp_path / "entry", MergeResult(deltas=lazy, output_rank=4,
                                                               info={"steps": 10, "weights": torch.ones(2)}), cost)
    assert set(returned.deltas) == {"layers.0.q_proj", "layers.0.o_proj"}  # the lazy deltas, kept
    loaded, loaded_cost = merge_cache.load(tmp_path / "entry")
    assert loaded_cost == cost and loaded.output_rank == 4 and loaded.info == {"steps": 10, "weights": [1.0, 1.0]}
    again = loaded.deltas["layers.0.q_proj"]
    assert isinstance(again, LoraFactors) and again.scale == 2.5
    assert torch.equal(again.A, factors.A) and torch.equal(again.B, factors.B)
    assert torch.equal(loaded.deltas["layers.0.o_proj"], dense)
    assert not (tmp_path / "entry.partial").exists()


def test_the_key_changes_with_every_input_of_the_training():
    suite = load_suite("micro")
    other_recipe = suite.model_copy(update={"expert": suite.expert.model_copy(update={"lr": 0.001})})
    cat = catalog.create_method("cat", {}, SKILLS)
    data = {"math": [{"prompt": "1+1", "completion": "2"}]}
    key = trained_merge_key(suite, cat, 0, "sha256:b", ["e1", "e2"], data)
    assert key == trained_merge_key(suite, catalog.create_method("cat", {}, SKILLS), 0, "sha256:b", ["e1", "e2"], data)
    changed = [
        trained_merge_key(suite, catalog.create_method("cat", {"steps": 7}, SKILLS), 0, "sha256:b", ["e1", "e2"], data),
        trained_merge_key(suite, cat, 1, "sha256:b", ["e1", "e2"], data),
        trained_merge_key(suite, cat, 0, "sha256:c", ["e1", "e2"], data),
        trained_merge_key(suite, cat, 0, "sha256:b", ["e1", "e3"], data),
        trained_merge_key(suite, cat, 0, "sha256:b", ["e1", "e2"], {"math": [{"prompt": "1+1", "completion": "3"}]}),
        trained_merge_key(other_recipe, cat, 0, "sha256:b", ["e1", "e2"], data),
        trained_merge_key(suite, cat, 0, "sha256:b", ["e1", "e2"], data, "math_code", [{"prompt": "p"}]),
        trained_merge_key(suite, catalog.create_method("data_mix", {}, SKILLS), 0, "sha256:b", ["e1", "e2"], data),
    ]
    assert key not in changed and len(set(changed)) == len(changed)
