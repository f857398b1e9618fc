"""Static CAT (LoRA Soups, Prabhakar et al. 2025): concatenate the experts' LoRAs with fixed weights.

dW = sum_i w_i * s_i * B_i @ A_i is itself a LoRA: A = vstack(w_i * s_i * A_i), B = hstack(B_i),
scale 1. Nothing is densified and no cross terms B_i A_j appear; the rank is the sum of the ranks
of the experts that adapt the module. Learned CAT (`cat`) trains the w_i per module instead.
"""

from __future__ import annotations

import torch

from benchmark.lora import Expert, LoraFactors, module_union
from benchmark.method import Consumes, MergeContext, MergeMethod, MergeResult, MethodParams
from methods.task_arithmetic import resolve_weights


def concatenate(factors: list[LoraFactors], weights: list[float]) -> LoraFactors:
    """One LoRA equal to sum_i w_i * factors_i; weight and scale go into A, B is left as trained."""
    A = torch.cat([(w * f.scale) * f.A.to(torch.float32) for f, w in zip(factors, weights)], dim=0)
    B = torch.cat([f.B.to(torch.float32) for f in factors], dim=1)
    return LoraFactors(A=A, B=B, scale=1.0)


class CatStatic(MergeMethod):
    """CAT with fixed per-expert weights (1.0 each by default); stays low-rank."""

    class Params(MethodParams):
        # One weight per expert, in the order given; None means 1.0 each.
        weights: list[float] | None = None

    name = "cat_static"
    description = "Concatenation of the experts' LoRAs with fixed weights (rank = sum of ranks)."
    paper = "https://arxiv.org/abs/2410.13025"
    family = "concatenation"
    consumes = Consumes.NOTHING
    streams = True

    def merge(self, experts: list[Expert], context: MergeContext) -> MergeResult:
        weights = resolve_weights(self.params.weights, experts, self.name)
        deltas: dict[str, LoraFactors] = {}
        for module in module_union(experts):
            present = [(e.modules[module], w) for e, w in zip(experts, weights) if module in e.modules]
            deltas[module] = concatenate([f for f, _ in present], [w for _, w in present])
        rank = max((f.rank for f in deltas.values()), default=0)
        return MergeResult(deltas=deltas, output_rank=rank, info={"weights": weights})
