"""CAT, learned (LoRA Soups, Prabhakar et al., COLING 2025): https://arxiv.org/abs/2410.13025

Concatenate the experts' LoRAs and learn one scalar per expert per module, experts frozen, on a
small sample (5% by default) of the union of the skills' training data, never on target-task
data. As in the paper's reference code the scalars are softmax-normalised across the experts of
each module (`normalize="softmax"`); `normalize="none"` learns free scalars starting at 1.0. The
result is the low-rank LoRA A = vstack(alpha_i s_i A_i), B = hstack(B_i): no cross terms.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.lora import Expert, LoraFactors, module_union
from benchmark.method import Consumes, MergeContext, MergeMethod, MergeResult, MethodParams
from methods.cat_static import concatenate


class CatLinear(nn.Module):
    """A frozen linear layer plus frozen expert LoRAs mixed by learnable per-module logits."""

    def __init__(self, base: nn.Linear, factors: list[LoraFactors], normalize: str) -> None:
        super().__init__()
        self.base = base
        self.normalize = normalize
        self.A = nn.ParameterList([nn.Parameter(f.scale * f.A.float(), requires_grad=False) for f in factors])
        self.B = nn.ParameterList([nn.Parameter(f.B.float(), requires_grad=False) for f in factors])
        start = 0.0 if normalize == "softmax" else 1.0
        self.logits = nn.Parameter(torch.full((len(factors),), start))

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0) if self.normalize == "softmax" else self.logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        for weight, A, B in zip(self.weights(), self.A, self.B):
            out = out + weight * ((x @ A.T) @ B.T)
        return out


class Cat(MergeMethod):
    """Learned CAT: per-module expert weights trained on a sample of the skills' training data."""

    class Params(MethodParams):
        sample_fraction: float = 0.05  # of each skill's training data (the paper's 5%)
        steps: int = 150
        lr: float = 0.05
        batch_size: int = 16
        normalize: str = "softmax"  # "softmax" (reference code) or "none"

    name = "cat"
    description = ("Concatenated expert LoRAs with one learned weight per expert per module, "
                   "trained on a 5% sample of the skills' data (experts frozen).")
    paper = "https://arxiv.org/abs/2410.13025"
    family = "concatenation"
    consumes = Consumes.SKILL_SAMPLE
    cache_result = True  # it trains: computed once per (base, experts, data, params, code, seed)

    def merge(self, experts: list[Expert], context: MergeContext) -> MergeResult:
        if self.params.normalize not in ("softmax", "none"):
            raise ValueError(f"cat: normalize must be 'softmax' or 'none', not {self.params.normalize!r}")
        if context.load_base is None or context.trainer is None or not context.skill_data:
            raise ValueError("cat needs the base model, the trainer and the skills' training data")
        model = context.load_base()
        layers: dict[str, tuple[CatLinear, list[int]]] = {}
        for module in module_union(experts):
            holders = [i for i, e in enumerate(experts) if module in e.modules]
            parent_name, _, child = module.rpartition(".")
            parent = model.get_submodule(parent_name)
            layer = CatLinear(getattr(parent, child), [experts[i].modules[module] for i in holders],
                              self.params.normalize)
            setattr(parent, child, layer.to(layer.base.weight.device))
            layers[module] = (layer, holders)

        from benchmark.training import sample_examples  # imports peft: only when CAT trains

        sample = sample_examples(context.skill_data, self.params.sample_fraction, context.seed)
        logits = [layer.logits for layer, _ in layers.values()]
        context.trainer.fit(model, logits, sample, self.params.steps, self.params.lr,
                            self.params.batch_size, context.seed, label="cat weights")

        deltas: dict[str, LoraFactors] = {}
        learned: dict[str, list[float]] = {}
        for module, (layer, holders) in layers.items():
            weights = layer.weights().detach().tolist()
            deltas[module] = concatenate([experts[i].modules[module] for i in holders], weights)
            learned[module] = [0.0] * len(experts)
            for i, w in zip(holders, weights):
                learned[module][i] = w
        rank = max((f.rank for f in deltas.values()), default=0)
        mean_weights = [sum(w[i] for w in learned.values()) / max(1, len(learned)) for i in range(len(experts))]
        return MergeResult(
            deltas=deltas, output_rank=rank,
            info={"n_train_examples": len(sample), "mean_weights": dict(zip([e.name for e in experts], mean_weights)),
                  "module_weights": learned},
        )
