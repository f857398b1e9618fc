"""LoraHub (Huang et al., COLM 2024): https://arxiv.org/abs/2307.13269

A gradient-free search for one weight per expert, w, such that the task-arithmetic merge
base + sum_i w_i dW_i has a low cross-entropy on a few examples of the target task. The paper
minimises loss + 0.05 * sum_i |w_i| over w in [-1.5, 1.5]^k from w = 0 with Nevergrad's NGOpt and
a budget of 40 evaluations. Nevergrad is not a dependency here: the search is a (1+1) evolution
strategy with the 1/5th success rule (Rechenberg; Kern et al. 2004), seeded by the run's seed,
so a run is reproducible. Being elitist from w = 0, it never returns weights worse than the base
on its own objective.

Two choices differ from the reference code (sail-sg/lorahub) on purpose:
- the merge is on dense task vectors dW_i, as every dense method here, not on lora_A and lora_B
  separately (which adds cross terms B_i A_j no expert learned, see DESIGN.md);
- the loss is the mean over examples of each completion's mean token cross-entropy (the reference
  divides a batch-mean loss by the number of examples once more), and the penalty is the paper's
  l1 * sum|w| (the reference code uses l1 * mean|w|).

Parameters: `n_examples` = 5 (the paper's 5 shots; recorded as info["n_target_examples"]),
`budget` = 40 loss evaluations (including w = 0), `l1` = 0.05, `bound` = 1.5, `max_length` = 256
tokens per example.

Evaluations reuse one model: the adapted modules' base weights are copied once and each candidate
w is written in place (restore, then add sum_i w_i dW_i, densified module by module from the
factors, exactly as the final merge is applied). The copy holds only adapted weights: negligible
on the micro models this method targets, the size of the adapted layers on a 7B model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field

from benchmark.adapters import check_compatible, target_layer
from benchmark.apply import apply_deltas
from benchmark.lora import Expert, module_union
from benchmark.method import Consumes, MergeContext, MergeMethod, MergeResult, MethodParams
from methods.task_arithmetic import TaskArithmetic

_CHUNK = 8  # examples per forward pass


def one_plus_one_es(objective: Callable[[list[float]], float], dim: int, budget: int, bound: float,
                    seed: int) -> tuple[list[float], float, int]:
    """Minimise `objective` over [-bound, bound]^dim from 0 in `budget` evaluations.

    Each step draws one Gaussian candidate around the best point (clipped to the box) and keeps it
    only if it is strictly better; the step size grows by e^(1/3) on success and shrinks by
    e^(-1/12) on failure, which settles at a 1/5 success rate. Returns (best, value, evaluations).
    """
    generator = torch.Generator().manual_seed(seed)
    best = [0.0] * dim
    best_value = objective(best)
    sigma = bound / 3.0
    evaluations = 1
    while evaluations < budget:
        step = torch.randn(dim, generator=generator, dtype=torch.float64)
        candidate = (torch.tensor(best, dtype=torch.float64) + sigma * step).clamp(-bound, bound).tolist()
        value = objective(candidate)
        evaluations += 1
        if value < best_value:
            best, best_value = candidate, value
            sigma = min(sigma * math.exp(1 / 3), 2 * bound)
        else:
            sigma *= math.exp(-1 / 12)
    return best, best_value, evaluations


def completion_batches(examples: Sequence[dict], tokenizer, max_length: int) -> list[dict[str, torch.Tensor]]:
    """Right-padded batches of prompt + target (+ EOS) with only the target tokens as labels.

    Encoded as experts are trained (`benchmark.training.encode_supervised`); examples whose target
    is cut off entirely by `max_length` are left out.
    """
    pairs = [{"prompt": e["prompt"], "completion": e["target"]} for e in examples]
    from benchmark.training import collate_supervised, encode_supervised  # imports peft: only when LoraHub runs

    encoded = [(ids, n) for ids, n in encode_supervised(pairs, tokenizer, max_length) if n < len(ids)]
    return [collate_supervised(encoded[start:start + _CHUNK], tokenizer.pad_token_id)
            for start in range(0, len(encoded), _CHUNK)]


@torch.no_grad()
def completion_loss(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    """Mean over examples of the mean cross-entropy of each example's target tokens."""
    device = next(model.parameters()).device
    per_example: list[torch.Tensor] = []
    for batch in batches:
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits.float()
        targets = batch["labels"][:, 1:].to(device)
        ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="none")
        counted = targets != -100
        per_example.append((ce * counted).sum(dim=1) / counted.sum(dim=1))
    return torch.cat(per_example).mean().item()


class LoraHub(MergeMethod):
    """Task arithmetic whose per-expert weights are searched on a few target examples."""

    class Params(MethodParams):
        n_examples: int = Field(5, ge=1)  # target examples used (the paper's 5)
        budget: int = Field(40, ge=1)  # loss evaluations, w = 0 included (the paper's 40 steps)
        l1: float = Field(0.05, ge=0.0)  # penalty l1 * sum_i |w_i|
        bound: float = Field(1.5, gt=0.0)  # each w_i in [-bound, bound]
        max_length: int = Field(256, ge=8)  # tokens per example (prompt + target)

    name = "lorahub"
    description = ("Task arithmetic with per-expert weights found by gradient-free search on a few "
                   "target-task examples (loss + L1).")
    paper = "https://arxiv.org/abs/2307.13269"
    family = "linear"
    consumes = Consumes.TARGET_EXAMPLES

    def merge(self, experts: list[Expert], context: MergeContext) -> MergeResult:
        p = self.params
        if not experts:
            raise ValueError("lorahub: no experts to merge")
        if not context.target_examples:
            raise ValueError(f"lorahub: no target examples for task {context.target_task!r}; it searches "
                             "its weights on examples of the target task (context.target_examples)")
        if context.load_base is None or context.tokenizer is None:
            raise ValueError("lorahub needs the base model (context.load_base) and its tokenizer")
        examples = list(context.target_examples)
        if len(examples) > p.n_examples:
            examples = random.Random(context.seed).sample(examples, p.n_examples)
        batches = completion_batches(examples, context.tokenizer, p.max_length)
        if not batches:
            raise ValueError(f"lorahub: every target example is longer than max_length={p.max_length}")
        n_used = sum(b["input_ids"].shape[0] for b in batches)

        model = context.load_base().eval()
        for expert in experts:  # a clear error before any weight is touched
            check_compatible(expert, model)
        modules = module_union(experts)
        originals = {m: target_layer(model, m).weight.detach().clone() for m in modules}

        losses: list[float] = []  # per evaluation, in order; the first is w = 0 (the base)

        def objective(weights: list[float]) -> float:
            with torch.no_grad():
                for module, weight in originals.items():
                    target_layer(model, module).weight.copy_(weight)
            apply_deltas(model, TaskArithmetic(weights=weights).merge(experts, context))
            losses.append(completion_loss(model, batches))
            return losses[-1] + p.l1 * sum(abs(w) for w in weights)

        best, value, evaluations = one_plus_one_es(objective, len(experts), p.budget, p.bound, context.seed)
        del model, originals
        context.report(f"lorahub: weights {dict(zip([e.name for e in experts], best))}, objective {value:.4f}")
        result = TaskArithmetic(weights=best).merge(experts, context)
        result.info.update({
            "weights": best,
            "expert_weights": {e.name: w for e, w in zip(experts, best)},
            "objective": value,
            "loss": value - p.l1 * sum(abs(w) for w in best),
            "loss_at_zero": losses[0],
            "evaluations": evaluations,
            "n_target_examples": n_used,
        })
        return result
