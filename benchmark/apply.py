"""Add merged deltas into a model's weights, in place, one module at a time.

A merge result may be a lazy iterator over modules; this is the one place that consumes it, so at
most one dense delta exists at any moment (a 7B model never holds k dense copies). Conv1D weights
(GPT-2) are stored (in, out), so the (out, in) delta is transposed here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from benchmark.adapters import AdapterMismatchError, dense_shape, target_layer
from benchmark.lora import LoraFactors
from benchmark.method import Delta, MergeResult


def _items(result: MergeResult | Mapping[str, Delta] | Iterable[tuple[str, Delta]]) -> Iterable[tuple[str, Delta]]:
    if isinstance(result, MergeResult):
        return result.items()
    if isinstance(result, Mapping):
        return result.items()
    return result


def apply_deltas(
    model: nn.Module,
    result: MergeResult | Mapping[str, Delta] | Iterable[tuple[str, Delta]],
    measure_rank: bool = False,
) -> dict[str, Any]:
    """Add each module's delta to its base weight; return what was done.

    The sum is formed in float32 and rounded once into the weight's dtype (adding a delta already
    rounded to bf16 would round twice). Stats: `modules` (touched), `dense_modules`,
    `lowrank_modules`, and `max_output_rank`: exact for low-rank deltas, measured for dense ones only
    when `measure_rank` (an SVD per module; off by default because it is slow on big models), else
    None when a dense delta was seen.
    """
    stats: dict[str, Any] = {"modules": 0, "dense_modules": 0, "lowrank_modules": 0, "max_output_rank": 0}
    rank_known = True
    seen: set[str] = set()
    with torch.no_grad():
        for module, delta in _items(result):
            if module in seen:
                raise ValueError(f"apply_deltas: module {module!r} appears twice in the merge result")
            seen.add(module)
            layer = target_layer(model, module)
            if layer is None:
                raise AdapterMismatchError(f"apply_deltas: module {module!r} does not exist in the model")
            if not isinstance(layer, (nn.Linear, Conv1D)):
                raise AdapterMismatchError(
                    f"apply_deltas: module {module!r} is a {type(layer).__name__}, not Linear or Conv1D"
                )
            weight = layer.weight
            if isinstance(delta, LoraFactors):
                shape, rank = delta.shape, delta.rank
                stats["lowrank_modules"] += 1
            else:
                shape, rank = tuple(delta.shape), None
                stats["dense_modules"] += 1
            if shape != dense_shape(layer):
                raise AdapterMismatchError(
                    f"apply_deltas: module {module!r} delta has shape (out, in) = {shape}, "
                    f"the model's weight {dense_shape(layer)}"
                )
            if isinstance(delta, LoraFactors):  # densify on the weight's device, in float32
                A, B = (f.to(weight.device, torch.float32) for f in (delta.A, delta.B))
                dense = delta.scale * (B @ A)
            else:
                dense = delta.to(device=weight.device, dtype=torch.float32)
            if isinstance(layer, Conv1D):
                dense = dense.T
            weight.copy_(weight.float() + dense)
            if rank is None and measure_rank:
                rank = int(torch.linalg.matrix_rank(dense).item())
            if rank is None:
                rank_known = False
            else:
                stats["max_output_rank"] = max(stats["max_output_rank"], rank)
            stats["modules"] += 1
            del dense
    if not rank_known:
        stats["max_output_rank"] = None
    return stats
