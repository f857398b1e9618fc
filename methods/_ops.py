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

    Exactly peft's `prune(delta, density, "magnitude")`, bit for bit: the count is floored, ties at
    the boundary go the way `torch.topk` breaks them, and density 1 returns the input itself. The
    kept set is found by a selection that never sorts (`top_magnitude_mask`), ~8x cheaper than
    the sorted topk peft uses. Unlike peft, a density above 1 is an error rather than a warning
    (it is always a configuration mistake).
    """
    _check_density(density, low_inclusive=True)
    if density >= 1.0:
        return delta
    keep = top_magnitude_mask(delta, int(density * delta.numel()))
    return delta * keep.to(delta.dtype)  # a 0/1 factor: the bits of peft's delta * mask, signed zeros included


def top_magnitude_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (values' shape) that `values * mask` equals `values * topk(|values|, k)-mask` on.

    The k-th largest magnitude is found by a radix selection on the bit patterns of |values|
    (for non-negative IEEE floats, integer order of the bits is numeric order): a 2^15-bin count
    of the high 16 bits, then a 2^16-bin count of the low bits inside the one bin that holds the
    cut-off. That is a few linear passes, where `torch.topk` (sorted, as peft calls it) sorts three
    quarters of the module. Entries above the cut-off are kept. Entries equal to it are resolved so
    that the product is topk's: all kept when all fit; any choice when the cut-off is 0 (a kept
    or dropped zero multiplies to the same signed zero); otherwise, and only then, topk's own
    choice is taken from an unsorted topk (the same std::nth_element, hence the same set, as the
    sorted one, at a quarter of its cost). Random float32 deltas hit that case in a few percent of
    modules; integer-like or bfloat16 data far more often. Dtypes other than float32, float16 and
    bfloat16 use the unsorted topk directly.
    """
    flat = values.abs().reshape(-1)
    numel = flat.numel()
    if k <= 0 or k >= numel:
        return torch.full(values.shape, k > 0, dtype=torch.bool, device=values.device)
    if flat.dtype == torch.float32:
        bits = flat.view(torch.int32)
        threshold, kept_ties, ties = _radix_select(bits, k, high_shift=16)
    elif flat.dtype in (torch.float16, torch.bfloat16):
        bits = flat.view(torch.int16)
        threshold, kept_ties, ties = _radix_select(bits, k, high_shift=0)
    else:
        return _topk_mask(flat, k).reshape(values.shape)
    if kept_ties == ties:
        keep = bits >= threshold
    elif threshold == 0:
        keep = bits > 0
    else:
        return _topk_mask(flat, k).reshape(values.shape)
    return keep.reshape(values.shape)


def _topk_mask(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    keep = torch.zeros(magnitudes.shape, dtype=torch.bool, device=magnitudes.device)
    keep[torch.topk(magnitudes, k=k, largest=True, sorted=False).indices] = True
    return keep


def _suffix_counts(counts: torch.Tensor) -> torch.Tensor:
    """suffix[b] = number of entries in bins >= b."""
    return counts.flip(0).cumsum(0).flip(0)


def _last_bin_reaching(suffix: torch.Tensor, k: int) -> int:
    """The largest bin b whose suffix count is still >= k: the bin that holds the k-th largest."""
    return int((suffix >= k).nonzero()[-1])


def _radix_select(bits: torch.Tensor, k: int, high_shift: int) -> tuple[int, int, int]:
    """(bit pattern of the k-th largest, how many entries equal to it the top k holds, how many
    there are), for non-negative int bit patterns; `high_shift` 16 counts high then low halves of
    32-bit patterns, 0 counts 16-bit patterns in one pass. 0 < k < numel."""
    if high_shift:
        high = bits >> high_shift
        suffix = _suffix_counts(torch.bincount(high, minlength=1 << (31 - high_shift)))
        bucket = _last_bin_reaching(suffix, k)
        above = int(suffix[bucket + 1]) if bucket + 1 < suffix.numel() else 0
        low = bits[high == bucket] & ((1 << high_shift) - 1)
        k_low, base = k - above, bucket << high_shift
    else:
        low, k_low, base = bits, k, 0
    counts = torch.bincount(low, minlength=1 << (16 if high_shift else 15))
    suffix = _suffix_counts(counts)
    value = _last_bin_reaching(suffix, k_low)
    above = int(suffix[value + 1]) if value + 1 < suffix.numel() else 0
    return base | value, k_low - above, int(counts[value])


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
