"""Property tests for the building blocks in `methods._ops`, with peft's merge_utils as oracle.

Shapes are arbitrary 2-D (1..8 x 1..8), 1..4 experts, density in (0, 1]. Values for exact
comparisons lie on a 1/4 grid: sums of a few of them are exact in float32 and bfloat16 alike, so
a permutation of the experts cannot flip an elected sign through rounding, and any mismatch found
is a bug rather than float noise.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft.utils import merge_utils

from methods._ops import (Trimmed, _radix_select, disjoint_mean, elect_sign, low_rank_svd, magnitude_trim, random_drop,
                          sign_consensus, top_magnitude_mask, weighted_sum)

props = settings(max_examples=60, deadline=None, derandomize=True)  # this file's budget, not global

dims = st.integers(1, 8)
densities = st.floats(0.0, 1.0, exclude_min=True)
weights_st = st.floats(-2.0, 2.0, allow_nan=False, width=32)


@st.composite
def stacks(draw, max_experts: int = 4) -> torch.Tensor:
    """(k, rows, cols) on the 1/4 grid in [-4, 4], zeros included (silent entries)."""
    k, rows, cols = draw(st.integers(1, max_experts)), draw(dims), draw(dims)
    values = draw(st.lists(st.integers(-16, 16), min_size=k * rows * cols, max_size=k * rows * cols))
    return torch.tensor(values, dtype=torch.float32).reshape(k, rows, cols) / 4


@st.composite
def distinct_magnitudes(draw) -> torch.Tensor:
    """A (rows, cols) tensor whose |values| are distinct multiples of 1/4 (no ties for top-k)."""
    rows, cols = draw(dims), draw(dims)
    n = rows * cols
    order = draw(st.permutations(range(1, n + 1)))
    signs = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=n, max_size=n))
    return (torch.tensor(order, dtype=torch.float32) * torch.tensor(signs) / 4).reshape(rows, cols)


def peft_prune(delta: torch.Tensor, density: float) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns at density 1
        return merge_utils.prune(delta, density, method="magnitude")


@props
@given(distinct_magnitudes(), densities)
def test_trim_keeps_the_largest_and_equals_peft(delta, density):
    trimmed = magnitude_trim(delta, density)
    assert torch.equal(trimmed, peft_prune(delta, density))
    kept = trimmed != 0
    assert kept.sum().item() == (delta.numel() if density >= 1 else int(density * delta.numel()))
    assert torch.equal(trimmed[kept], delta[kept])  # survivors untouched
    if kept.any() and (~kept).any():
        assert delta[kept].abs().min() > delta[~kept].abs().max()


def cutoff_is_shared(delta: torch.Tensor, density: float) -> bool:
    """Whether only some of the entries equal to the k-th largest magnitude fit in the top k (the
    one case where the tie rule decides), the cut-off being non-zero."""
    k = int(density * delta.numel())
    if density >= 1.0 or k == 0:
        return False
    magnitudes = delta.abs().reshape(-1).double()
    kth = magnitudes.sort(descending=True).values[k - 1]
    return bool(kth != 0) and int((magnitudes >= kth).sum()) > k


@props
@given(stacks(), densities)
def test_trim_with_ties_in_magnitude_keeps_the_earliest_and_else_equals_peft(stacked, density):
    for delta in stacked:  # many equal magnitudes
        trimmed = magnitude_trim(delta, density)
        assert same_bits(trimmed, stable_sorted_trim(delta, density))
        if not cutoff_is_shared(delta, density):
            assert same_bits(trimmed, peft_prune(delta, density))


def test_a_shared_cut_off_goes_to_the_earliest_entries():
    delta = torch.tensor([[0.5, -2.0, 0.5], [-0.5, 3.0, 0.5]])  # top 3: 3, -2, then one of four 0.5s
    assert torch.equal(magnitude_trim(delta, 0.5), torch.tensor([[0.5, -2.0, 0.0], [0.0, 3.0, 0.0]]))
    kept = magnitude_trim(delta, 4 / 6) != 0
    assert kept.tolist() == [[True, True, True], [False, True, False]]


def sorted_topk_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """magnitude_trim as it was before the selection: a float mask from the sorted topk (peft's code)."""
    if density >= 1.0:
        return delta
    mask = torch.zeros_like(delta).reshape(-1)
    mask[torch.topk(delta.abs().reshape(-1), k=int(density * delta.numel()), largest=True).indices] = 1
    return delta * mask.reshape(delta.shape)


def stable_sorted_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """The tie rule spelled out: the first k of a stable descending sort of |delta| in row-major order."""
    if density >= 1.0:
        return delta
    mask = torch.zeros_like(delta).reshape(-1)
    order = torch.sort(delta.abs().reshape(-1).double(), descending=True, stable=True).indices
    mask[order[: int(density * delta.numel())]] = 1
    return delta * mask.reshape(delta.shape)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes: signed zeros count (torch.equal would call -0.0 and 0.0 equal)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def _selection_cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    cases = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        name = str(dtype).removeprefix("torch.")
        cases += [
            (f"{name}-random", torch.randn(97, 131, generator=g).to(dtype)),
            (f"{name}-small-ints", torch.randint(-3, 4, (64, 65), generator=g).to(dtype)),  # ties everywhere
            (f"{name}-zeros", torch.zeros(9, 11, dtype=dtype)),
            (f"{name}-negative-zeros", -torch.zeros(7, 3, dtype=dtype)),
            (f"{name}-sparse", torch.randn(40, 50, generator=g).mul(torch.rand(40, 50, generator=g) < 0.2).to(dtype)),
            (f"{name}-odd-1d", torch.randint(-2, 3, (4999,), generator=g).to(dtype)),
            (f"{name}-one", torch.tensor([[-1.5]], dtype=dtype)),
        ]
    # Magnitudes that differ only in their low 16 bits: the radix's second pass decides alone.
    close = torch.full((5000,), 1.0).view(torch.int32) + torch.randint(0, 1 << 16, (5000,), generator=g, dtype=torch.int32)
    cases.append(("float32-same-high-bits", close.view(torch.float32) * torch.where(torch.rand(5000, generator=g) < 0.5, -1.0, 1.0)))
    transposed = torch.randn(30, 20, generator=g).T  # non-contiguous: flattened in row-major order like topk's input
    cases.append(("float32-transposed", transposed))
    return cases


@pytest.mark.parametrize("name,delta", _selection_cases(), ids=[n for n, _ in _selection_cases()])
def test_trim_by_selection_is_the_stable_sort_and_where_no_tie_decides_peft_bit_for_bit(name, delta):
    decided_by_ties = 0
    for density in (0.0, 1e-4, 0.01, 0.2, 0.5, 0.75, 0.9, 0.9999, 1.0):
        trimmed = magnitude_trim(delta, density)
        assert same_bits(trimmed, stable_sorted_trim(delta, density)), (name, density)
        if cutoff_is_shared(delta, density):
            decided_by_ties += 1
        else:
            assert same_bits(trimmed, sorted_topk_trim(delta, density)), (name, density)
    if "small-ints" in name:  # the cases meant to exercise the tie rule do
        assert decided_by_ties > 0


def test_mask_for_k_zero_and_k_all():
    delta = torch.randn(5, 6)
    assert not top_magnitude_mask(delta, 0).any()
    assert top_magnitude_mask(delta, 30).all()
    assert top_magnitude_mask(delta, 30).shape == (5, 6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_radix_select_finds_the_kth_largest_and_its_ties(dtype):
    g = torch.Generator().manual_seed(3)
    for values in (torch.randn(20001, generator=g), torch.randint(-8, 9, (3001,), generator=g).float()):
        values = values.to(dtype)  # signed: the selection reads magnitudes from the bits itself
        magnitudes = values.abs()
        bits = magnitudes.view(torch.int32 if dtype == torch.float32 else torch.int16)
        ordered = magnitudes.float().sort(descending=True).values
        for k in (1, 2, 17, magnitudes.numel() // 2, magnitudes.numel() - 1):
            threshold, kept_ties, ties = _radix_select(values, k)
            kth = ordered[k - 1]
            assert threshold == int(bits[magnitudes.float() == kth][0])
            assert ties == int((magnitudes.float() == kth).sum())
            assert kept_ties == k - int((magnitudes.float() > kth).sum())


@props
@given(distinct_magnitudes(), densities)
def test_trim_in_bfloat16_matches_float32(delta, density):
    trimmed = magnitude_trim(delta.bfloat16(), density)  # the grid values are exact in bfloat16
    assert trimmed.dtype == torch.bfloat16
    assert torch.equal(trimmed.float(), magnitude_trim(delta, density))


@props
@given(distinct_magnitudes(), densities, st.integers(0, 2**31 - 1))
def test_random_drop_rescales_survivors_and_is_seeded(delta, density, seed):
    dropped = random_drop(delta, density, torch.Generator().manual_seed(seed))
    kept = dropped != 0
    assert torch.equal(dropped[kept], delta[kept] / density)
    assert torch.equal(random_drop(delta, density, torch.Generator().manual_seed(seed)), dropped)
    with torch.random.fork_rng():  # the same draws as peft's, which uses the global generator
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = merge_utils.prune(delta, density, "random", rescale=True)
    # peft gives NaN (0 / 0) where the density underflows float32; we give the dropped entries' 0
    assert torch.equal(dropped, torch.nan_to_num(reference, nan=0.0))
    low = random_drop(delta.bfloat16(), density, torch.Generator().manual_seed(seed))
    assert low.dtype == torch.bfloat16 and torch.equal(low != 0, kept)  # the mask ignores the dtype
    torch.testing.assert_close(low.float(), dropped, rtol=2**-7, atol=0)
    unscaled = random_drop(delta, density, torch.Generator().manual_seed(seed), rescale=False)
    assert torch.equal(unscaled, torch.where(kept, delta, torch.zeros_like(delta)))


@props
@given(st.data())
def test_random_drop_keeps_about_density(data):
    density = data.draw(st.floats(0.05, 0.95))
    delta = torch.ones(64, 64)
    dropped = random_drop(delta, density, torch.Generator().manual_seed(data.draw(st.integers(0, 10**6))))
    assert abs((dropped != 0).float().mean().item() - density) < 0.04  # > 6 standard deviations


@props
@given(stacks(), st.sampled_from(["total", "frequency"]))
def test_elect_sign_equals_peft_and_follows_the_experts(stacked, method):
    mask = elect_sign(stacked, method)
    assert mask.dtype == torch.bool and mask.shape == stacked.shape
    assert torch.equal(mask, merge_utils.calculate_majority_sign_mask(stacked, method))
    assert not mask[stacked == 0].any()  # zeros never agree
    perm = torch.randperm(stacked.shape[0], generator=torch.Generator().manual_seed(stacked.numel()))
    assert torch.equal(elect_sign(stacked[perm], method), mask[perm])
    assert torch.equal(elect_sign(stacked.bfloat16(), method), mask)


@props
@given(stacks(), st.sampled_from(["total", "frequency"]))
def test_disjoint_mean_equals_peft_and_ignores_order(stacked, method):
    mask = elect_sign(stacked, method)
    merged = disjoint_mean(stacked, mask)
    assert merged.dtype == torch.float32
    assert torch.equal(merged, merge_utils.disjoint_merge(stacked, mask))
    perm = torch.arange(stacked.shape[0]).flip(0)
    assert torch.equal(disjoint_mean(stacked[perm], mask[perm]), merged)
    assert torch.equal(disjoint_mean(stacked.bfloat16(), mask), merged)
    # the mean of agreeing entries lies between their extremes
    low = torch.where(mask, stacked, torch.inf).amin(0)
    high = torch.where(mask, stacked, -torch.inf).amax(0)
    agreed = mask.any(0)
    assert (merged[agreed] >= low[agreed]).all() and (merged[agreed] <= high[agreed]).all()
    assert (merged[~agreed] == 0).all()


@props
@given(stacks(), st.data())
def test_sign_consensus_is_peft_ties_without_trim_and_ignores_order(stacked, data):
    k = stacked.shape[0]
    weights = data.draw(st.lists(weights_st, min_size=k, max_size=k))
    method = data.draw(st.sampled_from(["total", "frequency"]))
    merged = sign_consensus(list(stacked), weights, method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = merge_utils.ties(list(stacked), torch.tensor(weights), 1.0, method)
    torch.testing.assert_close(merged, expected, atol=1e-6, rtol=0)
    perm = list(reversed(range(k)))
    torch.testing.assert_close(sign_consensus([stacked[i] for i in perm], [weights[i] for i in perm], method),
                               merged, atol=1e-6, rtol=0)


@props
@given(stacks(), st.data())
def test_weighted_sum_ignores_order_and_upcasts(stacked, data):
    k = stacked.shape[0]
    weights = data.draw(st.lists(weights_st, min_size=k, max_size=k))
    total = weighted_sum(list(stacked), weights)
    expected = merge_utils.task_arithmetic(list(stacked), torch.tensor(weights))
    torch.testing.assert_close(total, expected, atol=1e-5, rtol=0)
    perm = list(reversed(range(k)))
    torch.testing.assert_close(weighted_sum([stacked[i] for i in perm], [weights[i] for i in perm]), total,
                               atol=1e-5, rtol=0)
    noisy = stacked + torch.rand(stacked.shape, generator=torch.Generator().manual_seed(k)) / 7  # off the grid
    low = weighted_sum(list(noisy.bfloat16()), weights)
    assert low.dtype == torch.float32
    bound = sum(abs(w) * x.abs() for w, x in zip(weights, noisy)) * 2**-8 + 1e-5  # bf16 rounding of inputs
    assert ((low - weighted_sum(list(noisy), weights)).abs() <= bound).all()


@props
@given(dims, dims, st.integers(1, 6), st.integers(1, 8), st.integers(0, 1000))
def test_low_rank_svd_is_the_truncated_svd_of_the_product(rows, cols, inner, rank, seed):
    generator = torch.Generator().manual_seed(seed)
    B, A = torch.randn(rows, inner, generator=generator), torch.randn(inner, cols, generator=generator)
    Bk, Ak = low_rank_svd(B, A, rank)
    k = min(rank, inner, rows, cols)
    assert Bk.shape == (rows, k) and Ak.shape == (k, cols)
    S = torch.linalg.svdvals(B @ A)
    torch.testing.assert_close(torch.linalg.svdvals(Bk @ Ak)[:k], S[:k], atol=1e-4, rtol=1e-4)
    residual = (B @ A - Bk @ Ak).norm() ** 2
    assert residual.item() == pytest.approx((S[k:] ** 2).sum().item(), rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_bad_densities_are_refused(density):
    delta = torch.ones(2, 2)
    if density == 0.0:
        assert torch.equal(magnitude_trim(delta, 0.0), torch.zeros(2, 2))  # peft's semantics: keep none
    else:
        with pytest.raises(ValueError, match="density must be in"):
            magnitude_trim(delta, density)
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        random_drop(delta, density, torch.Generator())
    with pytest.raises(ValueError, match="'total' or 'frequency'"):
        elect_sign(delta[None], "median")  # type: ignore[arg-type]


def test_expert_geometry_of_known_deltas():
    """scripts/expert_geometry.py: norms, cosines and what the mean keeps, on deltas built to have them."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "expert_geometry.py"
    spec = importlib.util.spec_from_file_location("expert_geometry", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    a = torch.zeros(4, 4)
    a[0, 0] = 3.0
    b = torch.zeros(4, 4)
    b[1, 1] = 4.0
    out = module.module_geometry({"a": a, "b": b, "c": -a})
    assert out["norm a"] == pytest.approx(3.0) and out["norm b"] == pytest.approx(4.0)
    assert out["cos a/b"] == pytest.approx(0.0) and out["cos a/c"] == pytest.approx(-1.0)
    assert out["kept a"] == pytest.approx(0.0)  # a and -a cancel in the mean
    assert out["kept b"] == pytest.approx(1 / 3)  # orthogonal to the others: a third of it is left


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_trimmed_slices_feed_the_combiners_the_stable_sort_trim(dtype):
    """TIES and magnitude pruning hand the combiners `Trimmed` deltas, read a slice at a time: the
    merge must be the one of the whole trimmed tensors. Small integers put ties at the cut-off,
    and 600k entries span several slices, so the earliest-tied rule crosses slice boundaries."""
    g = torch.Generator().manual_seed(11)
    deltas = [torch.randint(-4, 5, (600, 1000), generator=g).to(dtype) for _ in range(3)]
    deltas.append(torch.randn(600, 1000, generator=g).to(dtype))
    for density in (0.05, 0.5, 0.75, 0.999):
        whole = [stable_sorted_trim(d, density) for d in deltas]
        lazy = [Trimmed(d, density) for d in deltas]
        for trimmed, part in zip(whole, lazy):
            flat = trimmed.reshape(-1)
            for start, stop in [(0, 7), (262_143, 262_145), (599_990, 600_000), (123_456, 400_000)]:
                assert same_bits(part.part(start, stop), flat[start:stop]), (density, start)
        weights = [1.0, 0.5, 2.0, -1.0]
        assert same_bits(sign_consensus(lazy, weights), sign_consensus(whole, weights)), density
        assert same_bits(weighted_sum(lazy, weights), weighted_sum(whole, weights)), density
        mixed = [lazy[0], whole[1], deltas[2], lazy[3]]  # a density-1 expert stays a plain tensor
        assert same_bits(sign_consensus(mixed, weights), sign_consensus([whole[0], whole[1], deltas[2], whole[3]], weights))


@pytest.mark.parametrize("weights", [[1.0, 1.0, 1.0, 1.0], [0.5, -2.0, 1.0, 3.0]])
def test_total_consensus_has_the_bits_of_elect_sign_and_disjoint_mean(weights):
    """sign_consensus's fast path for "total" (and its skipped weighting when every weight is 1)
    against the two steps it replaces, bit for bit: signed zeros, sums that cancel to 0 (elected +),
    positions with no non-zero entry, and more than one slice."""
    g = torch.Generator().manual_seed(5)
    values = torch.randint(-2, 3, (4, 150_000), generator=g).float()
    values[:, :5000] = torch.tensor([[-0.0], [0.0], [-0.0], [-0.0]])  # nothing to agree with
    values[:, 5000:6000] = torch.tensor([[2.0], [-2.0], [-0.0], [0.0]])  # cancels to +0: + elected
    values[1, ::7] = -0.0
    scale = torch.tensor(weights).view(-1, 1)
    expected = disjoint_mean(values * scale, elect_sign(values, "total"))
    merged = sign_consensus(list(values), weights, "total")
    assert same_bits(merged, expected)
    assert same_bits(merged[:5000], torch.zeros(5000)) and (merged[5000:6000] == 2.0 * weights[0]).all()
