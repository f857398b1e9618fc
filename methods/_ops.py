"""Pure tensor building blocks shared by merge methods: no models, files or registries here.

Each function acts on the dense deltas of one module, (out, in), so it can be tested on bare
random tensors and composed into families (TIES = trim, elect sign, disjoint mean; DARE swaps the
sparsifier). The reference semantics are those of `peft.utils.merge_utils` (peft 0.21); where a
function differs (validation, float32 accumulation) its docstring says so. Sparsifiers keep the
input's dtype; combiners return float32, the precision `benchmark.apply` adds deltas in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

SignMethod = Literal["total", "frequency"]
_CONSENSUS_SLICE = 1 << 16  # positions merged at once by sign_consensus: its temporaries fit in L2
_SLICE = 1 << 18  # entries per pass of the selection (1 MiB of float32)
# A sparsifier maps one expert's dense delta to a sparser one: (delta, density, generator) -> delta,
# a tensor or a `Trimmed` one that the combiners read a slice at a time.
Sparsifier = Callable[[torch.Tensor, float, torch.Generator], "torch.Tensor | Trimmed"]


def weighted_sum(deltas: Sequence[torch.Tensor | Trimmed], weights: Sequence[float]) -> torch.Tensor:
    """sum_i w_i * dW_i, accumulated in float32 (the linear combination of task arithmetic).

    Summed a slice at a time (each entry's sum is the same), so that a `Trimmed` delta is read
    without forming it."""
    if len(deltas) != len(weights):
        raise ValueError(f"weighted_sum: {len(deltas)} deltas but {len(weights)} weights")
    if not deltas:
        raise ValueError("weighted_sum: nothing to sum")
    total = torch.zeros(deltas[0].shape, dtype=torch.float32, device=deltas[0].device)
    flat, readers = total.view(-1), [_reader(d) for d in deltas]
    for start, stop in _slices(flat.numel(), _CONSENSUS_SLICE):
        for read, weight in zip(readers, weights):
            flat[start:stop].add_(read(start, stop).to(torch.float32), alpha=float(weight))
    return total


def _reader(delta: torch.Tensor | Trimmed) -> Callable[[int, int], torch.Tensor]:
    """(start, stop) -> entries [start, stop) of the flattened delta, a tensor's or a Trimmed one's."""
    if isinstance(delta, Trimmed):
        return delta.part
    flat = delta.reshape(-1)
    return lambda start, stop: flat[start:stop]


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
    lazy = Trimmed(delta, density)
    trimmed = torch.empty(delta.numel(), dtype=delta.dtype, device=delta.device)
    for start, stop in _slices(trimmed.numel()):
        trimmed[start:stop] = lazy.part(start, stop)
    return trimmed.view(delta.shape)


class Trimmed:
    """`magnitude_trim(delta, density)` read a slice at a time, the same bits, never formed whole.

    The combiners (`sign_consensus`, `weighted_sum`) take it where they take a trimmed tensor:
    TIES and magnitude pruning then read each expert's delta once after its selection, instead of
    writing a trimmed copy, a magnitude copy and a mask per expert and reading them back (on a
    5632 x 2048 module with 4 experts, one thread: 0.56 s -> 0.48 s, issue 15). Slices may be read
    in any order.
    """

    def __init__(self, delta: torch.Tensor, density: float) -> None:
        _check_density(density, low_inclusive=True)
        self.shape, self.dtype, self.device = delta.shape, delta.dtype, delta.device
        self._flat = delta.reshape(-1)
        k = int(density * self._flat.numel())
        self._cut = magnitude_cut(self._flat, k)
        self._mask = _stable_top_mask(self._flat.abs(), k) if self._cut is None else None

    def numel(self) -> int:
        return self._flat.numel()

    def part(self, start: int, stop: int) -> torch.Tensor:
        """Entries [start, stop) of the flattened trimmed delta (a 0/1 factor, as `delta * mask`:
        the bits of peft's product, signed zeros included)."""
        values = self._flat[start:stop]
        keep = self._mask[start:stop] if self._cut is None else self._cut.keep(values, start)
        return values * keep


@dataclass(frozen=True)
class MagnitudeCut:
    """The k entries of largest |value| of a flat float tensor, as a rule checked slice by slice:
    those whose magnitude's bit pattern is above `threshold`, and those equal to it at flat
    indices below `tie_end` (the earliest of the tied, as a stable descending sort picks them)."""

    threshold: int
    tie_end: int

    def keep(self, values: torch.Tensor, start: int) -> torch.Tensor:
        """Boolean mask of the slice `values` = flat[start:start + len(values)]."""
        bits = _magnitude_bits(values)
        if self.tie_end >= start + values.numel():  # every tied entry of the slice is kept
            return bits >= self.threshold
        keep = bits > self.threshold
        if self.tie_end > start:
            tied = bits[: self.tie_end - start] == self.threshold
            keep[: self.tie_end - start] |= tied
        return keep


# Integer views of |value|: for non-negative IEEE floats, integer order of the bits is numeric order.
_BIT_VIEWS = {torch.float32: (torch.int32, 0x7FFFFFFF), torch.float16: (torch.int16, 0x7FFF),
              torch.bfloat16: (torch.int16, 0x7FFF)}


def _magnitude_bits(values: torch.Tensor) -> torch.Tensor:
    """The bit patterns of |values| (sign bit cleared), for a contiguous slice of one of _BIT_VIEWS."""
    view, magnitude = _BIT_VIEWS[values.dtype]
    return values.view(view) & magnitude


def magnitude_cut(flat: torch.Tensor, k: int) -> MagnitudeCut | None:
    """The cut that keeps the k entries of largest |value| of a contiguous flat tensor (ties at the
    cut-off to the earliest); None for dtypes other than float32, float16 and bfloat16.

    The k-th largest magnitude is found by a radix selection on the bit patterns of |values|
    (`_radix_select`: a few linear passes, where `torch.topk`, sorted as peft calls it, sorts three
    quarters of the module). When the cut-off is 0 and not every zero fits, none is kept: a kept or
    dropped zero multiplies to the same signed zero, so the trimmed values are the same.
    """
    if flat.dtype not in _BIT_VIEWS:
        return None
    numel = flat.numel()
    if k <= 0:
        return MagnitudeCut(threshold=_BIT_VIEWS[flat.dtype][1], tie_end=0)  # above every pattern
    if k >= numel:
        return MagnitudeCut(threshold=-1, tie_end=0)
    threshold, kept_ties, ties = _radix_select(flat, k)
    if kept_ties == ties:
        return MagnitudeCut(threshold, tie_end=numel)
    if threshold == 0:
        return MagnitudeCut(threshold, tie_end=0)
    wanted = kept_ties
    for start, stop in _slices(numel):
        tied = (_magnitude_bits(flat[start:stop]) == threshold).nonzero().view(-1)
        if tied.numel() >= wanted:
            return MagnitudeCut(threshold, tie_end=start + int(tied[wanted - 1]) + 1)
        wanted -= tied.numel()
    raise AssertionError("magnitude_cut: fewer tied entries than the selection counted")


def top_magnitude_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (values' shape) of the k entries of largest |value|, ties at the cut-off going to
    the earliest in row-major order (what a stable descending sort would pick).

    Entries above the cut-off are kept; of those equal to it, as many as fit, earliest first
    (`magnitude_cut`). The tie rule is this function's own: peft takes topk's choice, which
    costs an unsorted topk over the whole module whenever the cut-off is shared, and on a 1B model's
    random deltas that is half of the modules and a third of a TIES merge's time (issue 15). When
    the cut-off is 0 the choice does not matter (a kept or dropped zero multiplies to the same
    signed zero). Dtypes other than float32, float16 and bfloat16 use a stable sort directly.
    """
    flat = values.reshape(-1)
    numel = flat.numel()
    if k <= 0 or k >= numel:
        return torch.full(values.shape, k > 0, dtype=torch.bool, device=values.device)
    cut = magnitude_cut(flat, k)
    if cut is None:
        return _stable_top_mask(flat.abs(), k).reshape(values.shape)
    keep = torch.empty(numel, dtype=torch.bool, device=values.device)
    for start, stop in _slices(numel):
        keep[start:stop] = cut.keep(flat[start:stop], start)
    return keep.reshape(values.shape)


def _slices(numel: int, size: int = _SLICE) -> Iterator[tuple[int, int]]:
    """Consecutive ranges of a flat tensor small enough that a pass's temporaries stay in cache:
    model-sized temporaries cost more in page faults than the arithmetic done on them."""
    for start in range(0, numel, size):
        yield start, min(start + size, numel)


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


def _radix_select(flat: torch.Tensor, k: int) -> tuple[int, int, int]:
    """(bit pattern of the k-th largest |value|, how many entries equal to it the top k holds, how
    many there are) of a contiguous flat float32, float16 or bfloat16 tensor; 0 < k < numel.

    32-bit patterns are counted in two passes, a 2^15-bin count of the high 16 bits and a 2^16-bin
    count of the low bits inside the one bin that holds the cut-off; 16-bit patterns in one pass.
    The magnitudes' bits are formed a slice at a time, never as a copy of the module."""
    numel = flat.numel()
    if flat.dtype == torch.float32:
        high_counts = torch.zeros(1 << 15, dtype=torch.int64, device=flat.device)
        for start, stop in _slices(numel):
            high_counts += torch.bincount(_magnitude_bits(flat[start:stop]) >> 16, minlength=1 << 15)
        suffix = _suffix_counts(high_counts)
        bucket = _last_bin_reaching(suffix, k)
        above = int(suffix[bucket + 1]) if bucket + 1 < suffix.numel() else 0
        counts = torch.zeros(1 << 16, dtype=torch.int64, device=flat.device)
        for start, stop in _slices(numel):
            part = _magnitude_bits(flat[start:stop])
            counts += torch.bincount(part[(part >> 16) == bucket] & 0xFFFF, minlength=1 << 16)
        k_low, base = k - above, bucket << 16
    else:
        counts = torch.zeros(1 << 15, dtype=torch.int64, device=flat.device)
        for start, stop in _slices(numel):
            counts += torch.bincount(_magnitude_bits(flat[start:stop]).to(torch.int32), minlength=1 << 15)
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


def sign_consensus(deltas: Sequence[torch.Tensor | Trimmed], weights: Sequence[float],
                   method: SignMethod = "total") -> torch.Tensor:
    """TIES's merge of (already sparsified) deltas: elect signs, weight, average the agreeing.

    As in peft's `ties`/`dare_ties` the sign is elected from the *unweighted* deltas and the
    weights apply afterwards (with the LoRA Soups weights 1, 1 the two orders coincide). `Trimmed`
    deltas are trimmed slice by slice here, with the same result as trimmed tensors.
    """
    if len(deltas) != len(weights):
        raise ValueError(f"sign_consensus: {len(deltas)} deltas but {len(weights)} weights")
    if not deltas:
        raise ValueError("sign_consensus: nothing to merge")
    shape = deltas[0].shape
    if any(d.shape != shape for d in deltas):
        raise ValueError(f"sign_consensus: deltas of shapes {[tuple(d.shape) for d in deltas]}")
    scale = torch.tensor([float(w) for w in weights], dtype=torch.float32, device=deltas[0].device).view(-1, 1)
    readers = [_reader(d) for d in deltas]
    merged = torch.empty(deltas[0].numel(), dtype=torch.float32, device=deltas[0].device)
    # Every step is per position, so slices give exactly the whole's values; a slice's temporaries
    # (the stack, signs, masks, weighted values: ~10 copies of the experts' deltas) stay in the
    # cache instead of being allocated model-sized, which made the consensus 4x slower at 1B.
    unweighted = all(float(w) == 1.0 for w in weights)  # x * 1.0 is x, bit for bit: skip the pass
    for start, stop in _slices(merged.numel(), _CONSENSUS_SLICE):
        stacked = torch.stack([read(start, stop).to(torch.float32) for read in readers])
        weighted = stacked if unweighted else stacked * scale
        if method == "total":
            merged[start:stop] = _total_consensus(stacked, weighted)
        else:
            merged[start:stop] = disjoint_mean(weighted, elect_sign(stacked, method))
    return merged.view(shape)


def _total_consensus(stacked: torch.Tensor, weighted: torch.Tensor) -> torch.Tensor:
    """`disjoint_mean(weighted, elect_sign(stacked, "total"))` of one slice in fewer passes, the same
    values (the consensus is most of a TIES merge, and torch's where-with-scalars, bool products and
    bool sums were half of it): an entry agrees when it is non-zero and positive exactly where the
    sum is >= 0, and the 0/1 mask multiplies and counts as float32. Only where an entry is NaN can
    the agreeing set differ from elect_sign's, and the position's mean is NaN in both."""
    agree = ((stacked > 0) == (stacked.sum(dim=0) >= 0)) & (stacked != 0)
    kept = agree.to(torch.float32)
    return (weighted * kept).sum(dim=0).div_(kept.sum(dim=0).clamp_(min=1.0))


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
