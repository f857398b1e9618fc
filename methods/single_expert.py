"""One expert alone (`expert-<skill>`): the reference each merge must keep up with on its skill."""

from __future__ import annotations

from benchmark.lora import Expert
from benchmark.method import Consumes, MergeContext, MergeMethod, MergeResult, MethodParams


def expert_skill(expert: Expert) -> str:
    """The skill an expert was trained on: recorded in its metadata, else its name."""
    return str(expert.metadata.get("skill") or expert.name)


class SingleExpert(MergeMethod):
    """Returns one expert's LoRA factors unchanged (low rank, its own scales).

    Registered as the family `expert-<skill>`; the catalog turns `expert-math` into
    `SingleExpert(skill="math")`.
    """

    class Params(MethodParams):
        skill: str

    name = "expert"
    description = "A single skill expert applied alone (upper reference on its own skill)."
    paper = "https://arxiv.org/abs/2106.09685"  # LoRA, Hu et al. 2021
    family = "baseline"
    consumes = Consumes.NOTHING
    streams = True

    @property
    def display_name(self) -> str:
        return f"expert-{self.params.skill}"

    def merge(self, experts: list[Expert], context: MergeContext) -> MergeResult:
        skill = self.params.skill
        matches = [e for e in experts if expert_skill(e) == skill]
        if len(matches) != 1:
            known = ", ".join(expert_skill(e) for e in experts) or "(none)"
            problem = "no expert" if not matches else f"{len(matches)} experts"
            raise ValueError(f"expert-{skill}: {problem} for skill {skill!r}; experts given: {known}")
        expert = matches[0]
        rank = max((f.rank for f in expert.modules.values()), default=0)
        return MergeResult(deltas=dict(expert.modules), output_rank=rank, info={"expert": expert.fingerprint})
