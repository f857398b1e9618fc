"""The base model itself: the floor every merge is measured against."""

from __future__ import annotations

from benchmark.lora import Expert
from benchmark.method import Consumes, MergeContext, MergeMethod, MergeResult


class Base(MergeMethod):
    """No change: empty deltas, so the evaluated model is the untouched base."""

    name = "base"
    description = "The base model without any adapter (lower reference)."
    paper = ""
    family = "baseline"
    consumes = Consumes.NOTHING
    streams = True

    def merge(self, experts: list[Expert], context: MergeContext) -> MergeResult:
        return MergeResult(deltas={}, output_rank=0)
