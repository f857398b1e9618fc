"""`code`: an explicit instruction turned into a short Python program, scored by running it."""

from benchmark.taskinfo import TaskInfo
from tasks.code.data import build_eval, build_train

TASK = TaskInfo(
    name="code",
    display_name="Instruction to program",
    description="An explicit arithmetic instruction (no story) answered by a Python program; the "
    "program is executed in the sandbox and its output compared with the answer. The code expert's "
    "own skill.",
    skills=("code",),
    primary_metric="exec_accuracy",
    build_eval=build_eval,
    build_train=build_train,
)
