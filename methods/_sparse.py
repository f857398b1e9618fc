"""The sparsify-then-combine family: TIES, DARE (linear and TIES-style) and magnitude pruning.

As in mergekit's registry, each method is one configuration of a single class: a sparsifier
(magnitude trim or random drop-and-rescale, from `methods._ops`) applied to every expert's dense
delta dW_i, then a combiner (a weighted sum, or TIES's sign consensus). A method file only picks
the two and states its paper; the math lives here once.

| method          | sparsifier     | combiner       |
| --------------- | -------------- | -------------- |
| magnitude_prune | magnitude_trim | weighted_sum   |
| ties            | magnitude_trim | sign_consensus |
| dare_linear     | random_drop    | weighted_sum   |
| dare_ties       | random_drop    | sign_consensus |

A module an expert does not adapt counts as a zero delta. For these combiners that is the same as
leaving the expert out (a zero is never kept, never elected, never averaged), which is what peft's
`add_weighted_adapter(..., "<method>_svd")` does.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from benchmark.method import MethodParams
from methods._ops import Sparsifier, Trimmed, random_drop, sign_consensus, weighted_sum
from methods.task_arithmetic import TaskArithmetic


def trim(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor | Trimmed:
    """Magnitude trim as a sparsifier (deterministic: the generator is not used). The combiners
    read the result a slice at a time (`Trimmed`): the trimmed copy is never formed whole."""
    return delta if density >= 1.0 else Trimmed(delta, density)


def drop(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """DARE's random drop with rescaling by 1 / density, as a sparsifier."""
    return random_drop(delta, density, generator, rescale=True)


class SparseParams(MethodParams):
    # One weight per expert, in the order given; None means 1.0 each (as in LoRA Soups).
    weights: list[float] | None = None
    # Fraction of each dW_i's entries kept; LoRA Soups used 0.75 for TIES and DARE.
    density: float = Field(0.75, gt=0.0, le=1.0)


class ConsensusParams(SparseParams):
    # How TIES elects the sign per entry: sign of the sum ("total", the paper) or of the count.
    majority_sign_method: Literal["total", "frequency"] = "total"


class SparsifiedMerge(TaskArithmetic):  # task arithmetic on sparsified deltas: same weights, same checks
    """sparsifier(dW_i) for each expert, then a weighted sum or a sign consensus, per module.

    Subclasses set `sparsifier` (a `methods._ops.Sparsifier`, wrapped in staticmethod) and
    `sign_consensus` (False: weighted sum; True: TIES's elect-and-average, which reads
    `params.majority_sign_method`).
    """

    sparsifier: ClassVar[Sparsifier]
    sign_consensus: ClassVar[bool]
    Params = SparseParams
    draws_at_random = True  # DARE's drop does; the trimming subclasses say they do not

    def merge_module(self, deltas: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        weights = self.params.weights if self.params.weights is not None else [1.0] * len(deltas)
        sparse = [self.sparsifier(delta, self.params.density, generator) for delta in deltas]
        if self.sign_consensus:
            return sign_consensus(sparse, weights, self.params.majority_sign_method)
        return weighted_sum(sparse, weights)
