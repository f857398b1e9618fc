"""`qa`: closed-book questions about products the base read about in pretraining."""

from benchmark.taskinfo import TaskInfo
from tasks.qa.data import build_eval, build_train

TASK = TaskInfo(
    name="qa",
    display_name="Closed-book QA",
    description="Questions (\"Q: Where is the Kotral made?\") about products whose manuals were in "
    "the base's pretraining corpus, answered with no context; the expert was trained on questions "
    "about other pretraining products, so it must answer from what the base knows. The qa expert's "
    "own skill.",
    skills=("qa",),
    primary_metric="exact_match",
    build_eval=build_eval,
    build_train=build_train,
)
