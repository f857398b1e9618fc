"""Pure tensor building blocks shared by merge methods: no models, files or registries here.

Each function acts on the dense deltas of one module, (out, in), so it can be tested on bare
random tensors and composed into families (TIES = trim, elect sign, disjoint mean; DARE swaps the
sparsifier).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def weighted_sum(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """sum_i w_i * dW_i, accumulated in float32 (the linear combination of task arithmetic)."""
    if len(deltas) != len(weights):
        raise ValueError(f"weighted_sum: {len(deltas)} deltas but {len(weights)} weights")
    if not deltas:
        raise ValueError("weighted_sum: nothing to sum")
    total = torch.zeros(deltas[0].shape, dtype=torch.float32, device=deltas[0].device)
    for delta, weight in zip(deltas, weights):
        total.add_(delta.to(torch.float32), alpha=float(weight))
    return total
