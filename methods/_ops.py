"""Pure tensor building blocks shared by merge methods: no models, files or registries here.

Each function acts on the dense deltas of one module, (out, in), so it can be tested on bare
random tensors and composed into families (TIES = trim, elect sign, disjoint mean; DARE swaps the
sparsifier). The reference semantics are those of `peft.utils.merge_utils` (peft 0.21); where a
function differs (validation, float32 accumulation) its docstring says so. Sparsifiers keep the
input's dtype; combiners return float32, the precision `benchmark.apply` adds deltas in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch

SignMethod = Literal["total", "frequency"]
_CONSENSUS_SLICE = 1 << 16  # positions merged at once by sign_consensus: its temporaries fit in L2
_SLICE = 1 << 18  # entries per pass of the selection (1 MiB of float32)
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


def factor_product_sum(Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor],
                       coefficients: Sequence[float]) -> torch.Tensor:
    """sum_i c_i * B_i @ A_i in float32, as the single product [c_1 B_1 ... c_n B_n] @ [A_1; ...; A_n].

    The concatenated product is the same matrix as the sum of the n products (peft's "cat"
    combination computes it this way); formed at once, it writes the (out, in) result one time
    instead of allocating, scaling and adding n dense matrices, which on model-sized modules is
    memory traffic, not arithmetic. Ranks may differ between terms.
    """
    if not (len(Bs) == len(As) == len(coefficients)) or not Bs:
        raise ValueError(f"factor_product_sum: {len(Bs)} B, {len(As)} A and {len(coefficients)} coefficients")
    left = torch.cat([B.to(torch.float32) * float(c) for B, c in zip(Bs, coefficients)], dim=1)
    right = torch.cat([A.to(torch.float32) for A in As], dim=0)
    return left @ right


def _check_density(density: float, low_inclusive: bool) -> None:
    if not (0.0 <= density if low_inclusive else 0.0 < density) or density > 1.0:
        interval = "[0, 1]" if low_inclusive else "(0, 1]"
        raise ValueError(f"density must be in {interval}, got {density}")


def magnitude_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the int(density * numel) entries of largest |value|, zero the rest (TIES's "trim").

    peft's `prune(delta, density, "magnitude")`, bit for bit, wherever the cut-off magnitude is
    held by entries that are all kept or all dropped; the count is floored and density 1 returns
    the input itself. Where only some of the entries equal to the cut-off fit, the earliest in
    row-major order are kept (`top_magnitude_mask`), where peft keeps whichever its `torch.topk`
    leaves (an artefact of the sort's implementation, not the same on CUDA). The kept set is found
    by a selection that never sorts, ~8x cheaper than the sorted topk peft uses. Unlike peft, a
    density above 1 is an error rather than a warning (it is always a configuration mistake).
    """
    _check_density(density, low_inclusive=True)
    if density >= 1.0:
        return delta
    keep = top_magnitude_mask(delta, int(density * delta.numel())).reshape(-1)
    flat = delta.reshape(-1)
    trimmed = torch.empty_like(flat)
    for start, stop in _slices(flat.numel()):  # a 0/1 factor: the bits of peft's delta * mask, signed zeros included
        torch.mul(flat[start:stop], keep[start:stop], out=trimmed[start:stop])
    return trimmed.view(delta.shape)


def top_magnitude_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (values' shape) of the k entries of largest |value|, ties at the cut-off going to
    the earliest in row-major order (what a stable descending sort would pick).

    The k-th largest magnitude is found by a radix selection on the bit patterns of |values|
    (for non-negative IEEE floats, integer order of the bits is numeric order): a 2^15-bin count
    of the high 16 bits, then a 2^16-bin count of the low bits inside the one bin that holds the
    cut-off. That is a few linear passes, where `torch.topk` (sorted, as peft calls it) sorts three
    quarters of the module. Entries above the cut-off are kept; of those equal to it, as many as
    fit, earliest first. The tie rule is this function's own: peft takes topk's choice, which
    costs an unsorted topk over the whole module whenever the cut-off is shared, and on a 1B model's
    random deltas that is half of the modules and a third of a TIES merge's time (issue 15). When
    the cut-off is 0 the choice does not matter (a kept or dropped zero multiplies to the same
    signed zero). Dtypes other than float32, float16 and bfloat16 use a stable sort directly.
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
        return _stable_top_mask(flat, k).reshape(values.shape)
    keep = torch.empty(numel, dtype=torch.bool, device=values.device)
    keep_all_tied = kept_ties == ties
    for start, stop in _slices(numel):
        torch.ge(bits[start:stop], threshold, out=keep[start:stop]) if keep_all_tied else \
            torch.gt(bits[start:stop], threshold, out=keep[start:stop])
    if not keep_all_tied and threshold != 0:  # the earliest of the entries at the cut-off
        wanted = kept_ties
        for start, stop in _slices(numel):
            tied = (bits[start:stop] == threshold).nonzero().view(-1)[:wanted]
            keep[start + tied] = True
            wanted -= tied.numel()
            if wanted == 0:
                break
    return keep.reshape(values.shape)


def _slices(numel: int) -> Iterator[tuple[int, int]]:
    """Consecutive ranges of a flat tensor small enough that a pass's temporaries stay in cache:
    model-sized temporaries cost more in page faults than the arithmetic done on them."""
    for start in range(0, numel, _SLICE):
        yield start, min(start + _SLICE, numel)


def _stable_top_mask(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    keep = torch.zeros(magnitudes.shape, dtype=torch.bool, device=magnitudes.device)
    keep[torch.sort(magnitudes, descending=True, stable=True).indices[:k]] = True
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
    numel = bits.numel()
    if high_shift:
        high_counts = torch.zeros(1 << (31 - high_shift), dtype=torch.int64, device=bits.device)
        for start, stop in _slices(numel):
            high_counts += torch.bincount(bits[start:stop] >> high_shift, minlength=high_counts.numel())
        suffix = _suffix_counts(high_counts)
        bucket = _last_bin_reaching(suffix, k)
        above = int(suffix[bucket + 1]) if bucket + 1 < suffix.numel() else 0
        counts = torch.zeros(1 << high_shift, dtype=torch.int64, device=bits.device)
        for start, stop in _slices(numel):
            part = bits[start:stop]
            counts += torch.bincount(part[(part >> high_shift) == bucket] & ((1 << high_shift) - 1),
                                     minlength=counts.numel())
        k_low, base = k - above, bucket << high_shift
    else:
        counts = torch.bincount(bits, minlength=1 << 15)
        k_low, base = k, 0
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
    if not deltas:
        raise ValueError("sign_consensus: nothing to merge")
    shape = deltas[0].shape
    if any(d.shape != shape for d in deltas):
        raise ValueError(f"sign_consensus: deltas of shapes {[tuple(d.shape) for d in deltas]}")
    scale = torch.tensor([float(w) for w in weights], dtype=torch.float32, device=deltas[0].device).view(-1, 1)
    flats = [d.reshape(-1) for d in deltas]
    merged = torch.empty(flats[0].numel(), dtype=torch.float32, device=deltas[0].device)
    # Every step is per position, so slices give exactly the whole's values; a slice's temporaries
    # (the stack, signs, masks, weighted values: ~10 copies of the experts' deltas) stay in the
    # cache instead of being allocated model-sized, which made the consensus 4x slower at 1B.
    for start in range(0, merged.numel(), _CONSENSUS_SLICE):
        stop = min(start + _CONSENSUS_SLICE, merged.numel())
        stacked = torch.stack([f[start:stop].to(torch.float32) for f in flats])
        merged[start:stop] = disjoint_mean(stacked * scale, elect_sign(stacked, method))
    return merged.view(shape)


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
