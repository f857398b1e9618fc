"""SVD merge: task arithmetic, then the best rank-k approximation per module, kept low-rank.

dW = sum_i w_i * dW_i (as `task_arithmetic`), then truncated to its top `rank` singular
directions (Eckart-Young: the best rank-k approximation in Frobenius and spectral norm) and
returned as LoRA factors B' = U_k S_k, A' = V_k^T. This is peft's `add_weighted_adapter(...,
combination_type="svd")` (kohya-ss's svd_merge_lora), made per module. LoRA Soups (Prabhakar et
al. 2025, https://arxiv.org/abs/2410.13025) compares against it as a merge that stays a LoRA.

The SVD is taken of the small core of the concatenated factors (`methods._ops.low_rank_svd`),
never of the dense out x in delta: the result is the same, the cost is that of a (sum of ranks)
square matrix per module.

Parameters: `weights` (None = 1.0 per expert); `rank` (None = the largest rank among the experts
adapting the module, peft's default `max(adapter ranks)`). A module's rank is capped at the sum of
its experts' ranks, where the truncation is exact: any `rank` at least that large reproduces task
arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from benchmark.lora import Expert, LoraFactors, module_union
from benchmark.method import Consumes, Delta, MergeContext, MergeMethod, MergeResult, MethodParams
from methods._ops import low_rank_svd
from methods.cat_static import concatenate
from methods.task_arithmetic import resolve_weights


class Svd(MergeMethod):
    """Weighted sum of task vectors, truncated by SVD to a LoRA of rank `rank` per module."""

    class Params(MethodParams):
        # One weight per expert, in the order given; None means 1.0 each.
        weights: list[float] | None = None
        # Output rank per module; None = max rank of the experts adapting it (peft's default).
        rank: int | None = Field(None, ge=1)

    name = "svd"
    description = "Task arithmetic truncated to its best rank-k approximation per module (stays a LoRA)."
    paper = "https://arxiv.org/abs/2410.13025"
    family = "low-rank"
    consumes = Consumes.NOTHING
    streams = True

    def module_rank(self, factors: list[LoraFactors]) -> int:
        """The rank this module is truncated to (known before any SVD, from the factor shapes)."""
        wanted = self.params.rank if self.params.rank is not None else max(f.rank for f in factors)
        out, inp = factors[0].shape
        return min(wanted, sum(f.rank for f in factors), out, inp)

    def merge(self, experts: list[Expert], context: MergeContext) -> MergeResult:
        weights = resolve_weights(self.params.weights, experts, self.name)
        present: dict[str, list[tuple[LoraFactors, float]]] = {
            module: [(e.modules[module], w) for e, w in zip(experts, weights) if module in e.modules]
            for module in module_union(experts)
        }
        ranks = {module: self.module_rank([f for f, _ in pairs]) for module, pairs in present.items()}

        def walk() -> Iterator[tuple[str, Delta]]:
            for module, pairs in present.items():
                joint = concatenate([f for f, _ in pairs], [w for _, w in pairs])  # = sum_i w_i dW_i
                B, A = low_rank_svd(joint.B, joint.A, ranks[module])
                yield module, LoraFactors(A=A, B=B, scale=1.0)

        return MergeResult(deltas=walk(), output_rank=max(ranks.values(), default=0),
                           info={"weights": weights})
