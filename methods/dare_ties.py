"""DARE + TIES (Yu et al., ICML 2024): https://arxiv.org/abs/2311.03099

TIES with the sparsifier swapped: each expert's dense task vector dW_i drops entries at random
(keep probability `density`, survivors times 1 / density), then signs are elected and the agreeing
entries averaged. Same as `peft.utils.merge_utils.dare_ties` given the same random draws (the
generator is seeded by the run's seed).

Parameters: `weights` (None = 1.0 per expert), `density` = 0.75 (LoRA Soups' setting),
`majority_sign_method` = "total" or "frequency".
"""

from __future__ import annotations

from benchmark.method import Consumes
from methods._sparse import ConsensusParams, SparsifiedMerge, drop


class DareTies(SparsifiedMerge):
    """Random drop and rescale, elect sign, disjoint mean."""

    Params = ConsensusParams
    sparsifier = staticmethod(drop)
    sign_consensus = True

    name = "dare_ties"
    description = "DARE then TIES: drop entries at random and rescale, elect signs, average those that agree."
    paper = "https://arxiv.org/abs/2311.03099"
    family = "sparsified"
    consumes = Consumes.NOTHING
