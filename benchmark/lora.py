"""LoRA experts as bare tensors: the objects merge math works on.

Nothing here reads files or touches a model. `benchmark.adapters` turns a PEFT adapter folder into
an `Expert`; `benchmark.apply` adds merged deltas to a model's weights. Keeping the middle pure
lets every method be tested on random tensors.

Orientation: every dense delta is (out_features, in_features), the layout of `nn.Linear.weight`.
Modules stored transposed (GPT-2's Conv1D) are transposed when loading and when applying, never
inside a method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def lora_scale(alpha: float, rank: int, use_rslora: bool = False) -> float:
    """PEFT's scaling: alpha / r, or alpha / sqrt(r) for rsLoRA (Kalajdzievski 2023)."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


@dataclass(frozen=True)
class LoraFactors:
    """One adapted module: delta W = scale * B @ A, with A (r x in) and B (out x r)."""

    A: torch.Tensor
    B: torch.Tensor
    scale: float

    def __post_init__(self) -> None:
        if self.A.dim() != 2 or self.B.dim() != 2 or self.A.shape[0] != self.B.shape[1]:
            raise ValueError(f"LoRA factors do not chain: A {tuple(self.A.shape)}, B {tuple(self.B.shape)}")

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the dense delta, (out, in)."""
        return (self.B.shape[0], self.A.shape[1])

    def delta(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dense task vector scale * B @ A (computed in float32 unless told otherwise)."""
        dtype = dtype or torch.float32
        return (self.B.to(dtype) @ self.A.to(dtype)).mul_(self.scale)  # = scale * (B @ A), one tensor


@dataclass
class Expert:
    """A LoRA adapter trained on one skill, as per-module factors keyed by module path.

    Module paths are those of the base model (`model.layers.0.self_attn.q_proj`), so experts with
    different target sets line up by name; a module missing from an expert means "no change".
    """

    name: str
    modules: dict[str, LoraFactors]
    fingerprint: str = ""
    metadata: dict = field(default_factory=dict)

    def delta(self, module: str) -> torch.Tensor | None:
        factors = self.modules.get(module)
        return None if factors is None else factors.delta()


def module_union(experts: list[Expert]) -> list[str]:
    """All modules adapted by at least one expert, in a stable order."""
    seen: dict[str, None] = {}
    for expert in experts:
        for name in expert.modules:
            seen.setdefault(name, None)
    return list(seen)
