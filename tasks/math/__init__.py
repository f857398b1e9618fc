"""`math`: word problems answered with the expression read off the story and its value."""

from benchmark.taskinfo import TaskInfo
from tasks.math.data import build_eval, build_train

TASK = TaskInfo(
    name="math",
    display_name="Math word problems",
    description="Word problems (GSM8K-style) answered with a worked expression, scored by the final "
    "number; trained on one- and two-digit stories, evaluated on one-digit ones. The math expert's "
    "own skill.",
    skills=("math",),
    primary_metric="exact_match",
    build_eval=build_eval,
    build_train=build_train,
)
