"""`manual`: the proprietary manual's facts, asked back in the manual's own words."""

from benchmark.taskinfo import TaskInfo
from tasks.manual.data import build_eval, build_train

TASK = TaskInfo(
    name="manual",
    display_name="Proprietary manual (cloze)",
    description="A statement of the proprietary manual cut before its value (\"Each Segevu is built "
    "in\" -> Perth), completed by the model: does it know the manual's facts, in the manual's own "
    "register? The manual expert's own skill: it is trained on the manual's text (the knowledge "
    "LoRA of LoRA Soups' QABot).",
    skills=("manual",),
    primary_metric="exact_match",
    build_eval=build_eval,
    build_train=build_train,
)
