"""Merged results of methods that train, kept by content: computed once, reused by every run with
the same inputs, shipped with a release.

A method that trains (data mixing's LoRA: 545 s of the 917 s of a cold micro grid on 2 cores;
CAT's per-module weights: 47 s) computes a pure function of the base, the experts, the data it
consumes, its parameters, its code, the training recipe and the seed. The key hashes all of
these (the method's source file included, so an edit recomputes), and the entry records what the
computation cost when it ran (seconds, peak memory, machine): a run that reuses it stores that
cost as the method's merge cost and says in its provenance that the result came from the cache,
so the leaderboard's cost columns stay the method's cost, not the cost of reading a file.

Only methods that opt in (`MergeMethod.cache_result = True`) are cached; results are stored as
safetensors (a dense delta as `<module>.delta`, factors as `<module>.A` / `<module>.B` with
their scales in the JSON beside them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from benchmark import cache
from benchmark.lora import LoraFactors
from benchmark.method import MergeResult

TENSORS = "merge.safetensors"
META = "merge.json"


def save(folder: Path, result: MergeResult, cost: dict[str, Any]) -> MergeResult:
    """Write `result` (its deltas materialised) with its cost; return it with dict deltas, since a
    lazy iterator of deltas can be walked only once."""
    deltas = dict(result.items())
    tensors: dict[str, torch.Tensor] = {}
    scales: dict[str, float] = {}
    for module, delta in deltas.items():
        if isinstance(delta, LoraFactors):
            tensors[f"{module}.A"] = delta.A.detach().cpu().contiguous()
            tensors[f"{module}.B"] = delta.B.detach().cpu().contiguous()
            scales[module] = float(delta.scale)
        else:
            tensors[f"{module}.delta"] = delta.detach().cpu().contiguous()
    staging = cache.staging_dir(folder)
    save_file(tensors, str(staging / TENSORS))
    (staging / META).write_text(json.dumps({"output_rank": result.output_rank, "info": _jsonable(result.info),
                                            "scales": scales, "cost": cost}, indent=1, sort_keys=True))
    cache.publish(staging, folder)
    return MergeResult(deltas=deltas, output_rank=result.output_rank, info=result.info)


def load(folder: Path) -> tuple[MergeResult, dict[str, Any]]:
    """A saved result and the cost it had when it was computed."""
    meta = json.loads((folder / META).read_text())
    tensors = load_file(str(folder / TENSORS))
    deltas: dict[str, Any] = {}
    for key, tensor in tensors.items():
        module, _, part = key.rpartition(".")
        if part == "delta":
            deltas[module] = tensor
        elif part == "A":
            deltas[module] = LoraFactors(A=tensor, B=tensors[f"{module}.B"], scale=meta["scales"][module])
    return MergeResult(deltas=deltas, output_rank=meta["output_rank"], info=meta["info"]), meta["cost"]


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    """The JSON-serialisable entries of a result's info (tensors such as CAT's weights are left to
    the tensors file only when they are deltas; other tensors become lists)."""
    out = {}
    for key, value in info.items():
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[key] = value
    return out
