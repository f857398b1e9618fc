"""TIES-Merging (Yadav et al., NeurIPS 2023): https://arxiv.org/abs/2306.01708

Per module, on the experts' dense task vectors dW_i: trim each to its top-`density` magnitudes,
elect a sign per entry, and average the entries that agree with it (weighted by `weights`).
Exactly `peft.utils.merge_utils.ties` (the sign is elected before weighting, as there).

Parameters: `weights` (None = 1.0 per expert), `density` = 0.75 (LoRA Soups' setting),
`majority_sign_method` = "total" (sign of the sum, the paper's rule) or "frequency".
"""

from __future__ import annotations

from benchmark.method import Consumes
from methods._sparse import ConsensusParams, SparsifiedMerge, trim


class Ties(SparsifiedMerge):
    """Trim, elect sign, disjoint mean."""

    Params = ConsensusParams
    sparsifier = staticmethod(trim)
    sign_consensus = True

    name = "ties"
    description = "TIES: trim each dW_i to its largest entries, elect signs, average those that agree."
    paper = "https://arxiv.org/abs/2306.01708"
    family = "sparsified"
    consumes = Consumes.NOTHING
    draws_at_random = False  # trimming is deterministic
