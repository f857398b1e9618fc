"""Norm-balanced task arithmetic: each expert's task vector rescaled to the experts' mean norm, then summed.

SoupBench's worked example of a method that is not built in (examples/norm_balanced/README.md takes
it through submit, import, verify and the leaderboard). Why this weighting: task arithmetic sums the
experts' deltas as they are, so an expert trained to a larger update (on micro, the math expert's
deltas are ~1.5x the code expert's in Frobenius norm) dominates every module. Rescaling each
module's delta to the experts' mean norm gives each skill an equal say while keeping the soup's
overall size that of task arithmetic.
"""

from __future__ import annotations

import torch

from benchmark.method import Consumes, MethodParams, ModuleWiseMethod


class NormBalanced(ModuleWiseMethod):
    """dW = sum_i (mean_j ||dW_j|| / ||dW_i||) dW_i, module by module (zero deltas stay zero)."""

    class Params(MethodParams):
        scale: float = 1.0  # on top of the balance; 1.0 keeps task arithmetic's overall size

    name = "norm_balanced"
    description = ("Task arithmetic with each expert's module delta rescaled to the experts' mean Frobenius "
                   "norm, so no expert dominates by the size of its update.")
    paper = "https://arxiv.org/abs/2212.04089"
    family = "linear"
    consumes = Consumes.NOTHING

    def merge_module(self, deltas: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        norms = torch.stack([delta.norm() for delta in deltas])
        present = norms > 0
        if not bool(present.any()):
            return torch.zeros_like(deltas[0])
        target = norms[present].mean()
        merged = torch.zeros_like(deltas[0])
        for delta, norm in zip(deltas, norms):
            if norm > 0:
                merged += (target / norm) * delta
        return self.params.scale * merged
