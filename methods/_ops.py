"""Pure tensor building blocks shared by merge methods: no models, files or registries here.

Each function acts on the dense deltas of one module, (out, in), so it can be tested on bare
random tensors and composed into families (TIES = trim, elect sign, disjoint mean; DARE swaps the
sparsifier). The reference semantics are those of `peft.utils.merge_utils` (peft 0.21); where a
function differs (validation, float32 accumulation) its docstring says so. Sparsifiers keep the
input's dtype; combiners return float32, the precision `benchmark.apply` adds deltas in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

SignMethod = Literal["total", "frequency"]
# A sparsifier maps one expert's dense delta to a sparser one: (delta, density, generator) -> delta.
Sparsifier = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


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


def _check_density(density: float, low_inclusive: bool) -> None:
    if not (0.0 <= density if low_inclusive else 0.0 < density) or density > 1.0:
        interval = "[0, 1]" if low_inclusive else "(0, 1]"
        raise ValueError(f"density must be in {interval}, got {density}")


def magnitude_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the int(density * numel) entries of largest |value|, zero the rest (TIES's "trim").

    Exactly peft's `prune(delta, density, "magnitude")`: the count is floored, ties at the boundary
    go the way `torch.topk` breaks them, and density 1 returns the input itself. Unlike peft,
    a density above 1 is an error rather than a warning (it is always a configuration mistake).
    """
    _check_density(density, low_inclusive=True)
    if density >= 1.0:
        return delta
    mask = torch.zeros_like(delta).reshape(-1)
    k = int(density * delta.numel())
    mask[torch.topk(delta.abs().reshape(-1), k=k, largest=True).indices] = 1
    return delta * mask.reshape(delta.shape)


def random_drop(delta: torch.Tensor, density: float, generator: torch.Generator,
                rescale: bool = True) -> torch.Tensor:
    """Keep each entry with probability `density`, survivors times 1 / density (DARE's drop).

    The mask is drawn as peft's `prune(delta, density, "random")` draws it (one Bernoulli per
    entry, in float32), but from `generator` instead of torch's global one: seeding both alike gives
    the same mask, and the mask does not depend on the delta's dtype. Rescaling divides, as peft
    does, so survivors are exactly delta / density. Density must be in (0, 1]; 1 keeps everything
    and draws nothing.
    """
    _check_density(density, low_inclusive=False)
    if density >= 1.0:
        return delta
    probs = torch.full(delta.shape, density, dtype=torch.float32, device=delta.device)
    keep = torch.bernoulli(probs, generator=generator).bool()
    # Select rather than multiply: a dropped entry is 0 even where delta / density overflows.
    return torch.where(keep, delta / density if rescale else delta, torch.zeros((), dtype=delta.dtype))


def elect_sign(stacked: torch.Tensor, method: SignMethod = "total") -> torch.Tensor:
    """Boolean mask (k, ...) of the entries whose sign agrees with the elected sign per position.

    peft's `calculate_majority_sign_mask`: the elected sign is that of the sum of values ("total",
    TIES) or of signs ("frequency"), + on a tie; zeros never agree. The sum is taken in float32 so
    that bfloat16 inputs elect what their float32 values would.
    """
    if method not in ("total", "frequency"):
        raise ValueError(f"elect_sign: method must be 'total' or 'frequency', not {method!r}")
    values = stacked.to(torch.float32)
    sign = values.sign()
    magnitude = values.sum(dim=0) if method == "total" else sign.sum(dim=0)
    majority = torch.where(magnitude >= 0, 1.0, -1.0)
    return sign == majority


def disjoint_mean(stacked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per position, the mean over experts of the entries `mask` keeps (0 where none is kept).

    peft's `disjoint_merge`, in float32: TIES averages only the experts that agree with the elected
    sign, so an expert that stays silent at an entry does not dilute the others.
    """
    if stacked.shape != mask.shape:
        raise ValueError(f"disjoint_mean: values {tuple(stacked.shape)} but mask {tuple(mask.shape)}")
    values = stacked.to(torch.float32) * mask
    return values.sum(dim=0) / torch.clamp(mask.sum(dim=0), min=1.0)


def sign_consensus(deltas: Sequence[torch.Tensor], weights: Sequence[float],
                   method: SignMethod = "total") -> torch.Tensor:
    """TIES's merge of (already sparsified) deltas: elect signs, weight, average the agreeing.

    As in peft's `ties`/`dare_ties` the sign is elected from the *unweighted* deltas and the
    weights apply afterwards (with the LoRA Soups weights 1, 1 the two orders coincide).
    """
    if len(deltas) != len(weights):
        raise ValueError(f"sign_consensus: {len(deltas)} deltas but {len(weights)} weights")
    stacked = torch.stack([d.to(torch.float32) for d in deltas])
    mask = elect_sign(stacked, method)
    scale = torch.tensor([float(w) for w in weights], dtype=torch.float32, device=stacked.device)
    return disjoint_mean(stacked * scale.view(-1, *([1] * (stacked.dim() - 1))), mask)


def low_rank_svd(B: torch.Tensor, A: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors (B', A') of the best rank-`rank` approximation of B @ A, never forming B @ A.

    With B = Q_B R_B and A^T = Q_A R_A (thin QR), B @ A = Q_B (R_B R_A^T) Q_A^T, so the SVD of the
    small R x R core gives that of the (out x in) product: on a 7B model this is an SVD of a
    16 x 16 matrix instead of 4096 x 11008 per module. As in peft's SVD merge, the singular
    values go into B' = U S and A' = V^T (shapes (out, k), (k, in) with k = min(rank, R, out, in)).
    """
    if rank < 1:
        raise ValueError(f"low_rank_svd: rank must be >= 1, got {rank}")
    Q_B, R_B = torch.linalg.qr(B.to(torch.float32))
    Q_A, R_A = torch.linalg.qr(A.to(torch.float32).T)
    U, S, Vh = torch.linalg.svd(R_B @ R_A.T, full_matrices=False)
    k = min(rank, S.numel())
    return (Q_B @ U[:, :k]) * S[:k], Vh[:k] @ Q_A.T
