"""Magnitude pruning, then task arithmetic: `peft.utils.merge_utils.magnitude_prune`.

The ablation between task arithmetic and TIES: each expert's dense task vector dW_i keeps its
top-`density` magnitudes (TIES's trim step), and the results are summed with `weights`, with no
sign election. TIES paper (Yadav et al., NeurIPS 2023), where trimming is introduced:
https://arxiv.org/abs/2306.01708

Parameters: `weights` (None = 1.0 per expert), `density` = 0.75.
"""

from __future__ import annotations

from benchmark.method import Consumes
from methods._sparse import SparseParams, SparsifiedMerge, trim


class MagnitudePrune(SparsifiedMerge):
    """Trim, then a weighted sum."""

    Params = SparseParams
    sparsifier = staticmethod(trim)
    sign_consensus = False

    name = "magnitude_prune"
    description = "Trim each dW_i to its largest-magnitude entries, then a weighted sum (TIES without sign election)."
    paper = "https://arxiv.org/abs/2306.01708"
    family = "sparsified"
    consumes = Consumes.NOTHING
    draws_at_random = False  # trimming is deterministic
