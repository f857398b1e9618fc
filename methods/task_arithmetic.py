"""Task arithmetic (Ilharco et al., ICLR 2023): dW = sum_i w_i * dW_i on each module's dense delta.

With all weights 1.0 this is the "model merging" baseline of LoRA Soups (Prabhakar et al. 2025).
As every dW_i = s_i B_i A_i is low-rank, the sum is formed as one product of the concatenated
factors, [w_1 s_1 B_1 ... w_n s_n B_n] @ [A_1; ...; A_n] (`methods._ops.factor_product_sum`), the
same matrix to float32 rounding without forming any expert's dense delta: on a 1B model with 4
experts that is a third of the merge's time. A subclass that combines the dense deltas its own
way (`merge_module`: TIES, DARE) gets them as before.
"""

from __future__ import annotations

import torch

from benchmark.lora import Expert, module_union
from benchmark.method import Consumes, MergeContext, MergeResult, MethodParams, ModuleWiseMethod
from benchmark.threads import ordered_map
from methods._ops import factor_product_sum, weighted_sum


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
        if type(self).merge_module is not TaskArithmetic.merge_module:
            result = super().merge(experts, context)
        else:
            def module_sum(module: str) -> torch.Tensor:
                present = [(e.modules[module], w) for e, w in zip(experts, weights) if module in e.modules]
                return factor_product_sum([f.B for f, _ in present], [f.A for f, _ in present],
                                          [w * f.scale for f, w in present])

            result = MergeResult(deltas=ordered_map(module_sum, lambda delta: delta, module_union(experts),
                                                    context.threads))
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
