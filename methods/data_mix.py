"""Data mixing (the LoRA Soups baseline): one LoRA trained on the union of the skills' data.

Same recipe as the experts, and the same number of epochs: the step count grows with the size of
the union, so each example is seen as often as by its skill's expert. It ignores the experts
(it is the multi-task alternative to merging) and consumes all of the skills' training data.
"""

from __future__ import annotations

import random

from benchmark.adapters import expert_from_peft_model
from benchmark.lora import Expert
from benchmark.method import Consumes, MergeContext, MergeMethod, MergeResult, MethodParams


class DataMix(MergeMethod):
    class Params(MethodParams):
        # Multiplies the step count (1.0 = the experts' epochs over the union).
        epochs_factor: float = 1.0

    name = "data_mix"
    description = "One LoRA trained on the union of all skills' training data (multi-task baseline)."
    paper = "https://arxiv.org/abs/2410.13025"
    family = "data"
    consumes = Consumes.SKILL_DATA
    cache_result = True  # it trains: computed once per (base, experts, data, params, code, seed)

    def merge(self, experts: list[Expert], context: MergeContext) -> MergeResult:
        if context.load_base is None or context.trainer is None or not context.skill_data:
            raise ValueError("data_mix needs the base model, the trainer and the skills' training data")
        union = [example for skill in sorted(context.skill_data) for example in context.skill_data[skill]]
        random.Random(context.seed).shuffle(union)
        per_skill = sum(len(v) for v in context.skill_data.values()) / len(context.skill_data)
        steps = max(1, round(context.trainer.recipe.steps * len(union) / per_skill * self.params.epochs_factor))
        model = context.trainer.train_lora(context.load_base(), union, context.seed, "data mixing LoRA", steps=steps)
        mixed = expert_from_peft_model(model, "default", "data_mix")
        rank = max((f.rank for f in mixed.modules.values()), default=0)
        return MergeResult(deltas=dict(mixed.modules), output_rank=rank,
                           info={"n_train_examples": len(union), "steps": steps})
