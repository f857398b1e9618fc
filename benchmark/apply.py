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


def check_delta(module: str, layer: nn.Module | None, delta: Delta) -> None:
    """Refuse a delta whose module is missing, not Linear/Conv1D, or of another (out, in) shape."""
    if layer is None:
        raise AdapterMismatchError(f"apply_deltas: module {module!r} does not exist in the model")
    if not isinstance(layer, (nn.Linear, Conv1D)):
        raise AdapterMismatchError(
            f"apply_deltas: module {module!r} is a {type(layer).__name__}, not Linear or Conv1D"
        )
    shape = delta.shape if isinstance(delta, LoraFactors) else tuple(delta.shape)
    if shape != dense_shape(layer):
        raise AdapterMismatchError(
            f"apply_deltas: module {module!r} delta has shape (out, in) = {shape}, "
            f"the model's weight {dense_shape(layer)}"
        )


def dense_delta(delta: Delta, device: torch.device | str, conv1d: bool) -> torch.Tensor:
    """The delta as a float32 tensor in the weight's layout ((in, out) for Conv1D), on `device`."""
    if isinstance(delta, LoraFactors):  # densify on the weight's device, in float32
        A, B = (f.to(device, torch.float32) for f in (delta.A, delta.B))
        dense = (B @ A).mul_(delta.scale)  # = scale * (B @ A) bit for bit, without a second copy
    else:
        dense = delta.to(device=device, dtype=torch.float32)
    return dense.T if conv1d else dense


def merged_weight(weight: torch.Tensor, dense: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """weight + dense formed in float32 and rounded once into the weight's dtype (adding a delta
    already rounded to bf16 would round twice). The in-memory and the streamed merge both write
    exactly this, so their outputs agree bit for bit.

    `in_place` lets a float32 weight hold the sum (returned): the same bits, without allocating a
    model-sized tensor per module, whose page faults cost more than the addition itself."""
    if in_place and weight.dtype == torch.float32:
        return weight.add_(dense)
    return (weight.float() + dense).to(weight.dtype)


class DeltaStats:
    """What a merge did to the weights: `modules` (touched), `dense_modules`, `lowrank_modules`, and
    `max_output_rank` (exact for low-rank deltas, measured for dense ones only on request)."""

    def __init__(self, measure_rank: bool = False) -> None:
        self.measure_rank = measure_rank
        self.counts = {"modules": 0, "dense_modules": 0, "lowrank_modules": 0}
        self.max_rank: int | None = 0
        self._seen: set[str] = set()

    def record(self, module: str, delta: Delta, dense: torch.Tensor) -> None:
        if module in self._seen:
            raise ValueError(f"apply_deltas: module {module!r} appears twice in the merge result")
        self._seen.add(module)
        self.counts["modules"] += 1
        if isinstance(delta, LoraFactors):
            self.counts["lowrank_modules"] += 1
            rank: int | None = delta.rank
        else:
            self.counts["dense_modules"] += 1
            rank = int(torch.linalg.matrix_rank(dense).item()) if self.measure_rank else None
        if rank is None or self.max_rank is None:
            self.max_rank = None
        else:
            self.max_rank = max(self.max_rank, rank)

    def seen(self, module: str) -> bool:
        return module in self._seen

    def as_dict(self) -> dict[str, Any]:
        return {**self.counts, "max_output_rank": self.max_rank}


def apply_deltas(
    model: nn.Module,
    result: MergeResult | Mapping[str, Delta] | Iterable[tuple[str, Delta]],
    measure_rank: bool = False,
) -> dict[str, Any]:
    """Add each module's delta to its base weight; return what was done.

    The sum is formed in float32 and rounded once into the weight's dtype (`merged_weight`). Stats
    (`DeltaStats`): `modules` (touched), `dense_modules`, `lowrank_modules`, and
    `max_output_rank`: exact for low-rank deltas, measured for dense ones only when `measure_rank`
    (an SVD per module; off by default because it is slow on big models), else None when a dense
    delta was seen.
    """
    stats = DeltaStats(measure_rank)
    with torch.no_grad():
        for module, delta in _items(result):
            if stats.seen(module):
                raise ValueError(f"apply_deltas: module {module!r} appears twice in the merge result")
            layer = target_layer(model, module)
            check_delta(module, layer, delta)
            weight = layer.weight
            dense = dense_delta(delta, weight.device, isinstance(layer, Conv1D))
            merged = merged_weight(weight, dense, in_place=True)
            if merged is not weight:
                weight.copy_(merged)
            stats.record(module, delta, dense)
            del dense
    return stats.as_dict()
