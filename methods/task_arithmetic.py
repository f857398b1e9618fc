"""Task arithmetic (Ilharco et al., ICLR 2023): dW = sum_i w_i * dW_i on each module's dense delta.

With all weights 1.0 this is the "model merging" baseline of LoRA Soups (Prabhakar et al. 2025).
"""

from __future__ import annotations

import torch

from benchmark.lora import Expert
from benchmark.method import Consumes, MergeContext, MergeResult, MethodParams, ModuleWiseMethod
from methods._ops import weighted_sum


class TaskArithmetic(ModuleWiseMethod):
    """Weighted sum of the experts' task vectors; a module an expert lacks counts as zeros."""

    class Params(MethodParams):
        # One weight per expert, in the order given; None means 1.0 each (as in LoRA Soups).
        weights: list[float] | None = None

    name = "task_arithmetic"
    description = "Weighted sum of the experts' dense task vectors dW_i = s_i B_i A_i."
    paper = "https://arxiv.org/abs/2212.04089"
    family = "linear"
    consumes = Consumes.NOTHING
    draws_at_random = False

    def merge(self, experts: list[Expert], context: MergeContext) -> MergeResult:
        weights = resolve_weights(self.params.weights, experts, self.name)  # fail before any module
        result = super().merge(experts, context)
        result.info["weights"] = weights
        return result

    def merge_module(self, deltas: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        weights = self.params.weights if self.params.weights is not None else [1.0] * len(deltas)
        return weighted_sum(deltas, weights)


def resolve_weights(weights: list[float] | None, experts: list[Expert], method: str) -> list[float]:
    """The per-expert weights: 1.0 each by default, else exactly one per expert."""
    if not experts:
        raise ValueError(f"{method}: no experts to merge")
    if weights is None:
        return [1.0] * len(experts)
    if len(weights) != len(experts):
        names = ", ".join(e.name for e in experts)
        raise ValueError(f"{method}: {len(weights)} weights given for {len(experts)} experts ({names})")
    return [float(w) for w in weights]
