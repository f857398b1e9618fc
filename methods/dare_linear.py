"""DARE, linear (Yu et al., ICML 2024): https://arxiv.org/abs/2311.03099

Each expert's dense task vector dW_i drops entries at random (keep probability `density`,
survivors times 1 / density, so the expected delta is unchanged), then the results are summed with
`weights`. Same as `peft.utils.merge_utils.dare_linear` given the same random draws (the generator
is seeded by the run's seed).

Parameters: `weights` (None = 1.0 per expert), `density` = 0.75 (LoRA Soups' setting).
"""

from __future__ import annotations

from benchmark.method import Consumes
from methods._sparse import SparseParams, SparsifiedMerge, drop


class DareLinear(SparsifiedMerge):
    """Random drop and rescale, then a weighted sum."""

    Params = SparseParams
    sparsifier = staticmethod(drop)
    sign_consensus = False

    name = "dare_linear"
    description = "DARE: drop entries of each dW_i at random, rescale survivors by 1/density, weighted sum."
    paper = "https://arxiv.org/abs/2311.03099"
    family = "sparsified"
    consumes = Consumes.NOTHING
