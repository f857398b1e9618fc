"""`manual_qa`: closed-book questions about the proprietary manual (LoRA Soups' QABot, in miniature)."""

from benchmark.taskinfo import TaskInfo
from tasks.manual_qa.data import build_eval

TASK = TaskInfo(
    name="manual_qa",
    display_name="Closed-book QA over a proprietary manual",
    description="The qa skill's questions about products that only the manual expert read about, "
    "answered with no context. Needs the manual skill (the facts) and the qa skill (the question "
    "format, never in pretraining); the qa expert alone guesses (chance: the commonest value of "
    "the asked attribute, 4-17%).",
    skills=("manual", "qa"),
    primary_metric="exact_match",
    build_eval=build_eval,
)
